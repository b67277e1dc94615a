package qemuvm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"golang.org/x/term"
)

// DetachKey is the byte that ends Attach: Ctrl-], as in telnet.
const DetachKey = 0x1d

// Attach connects the terminal to the guest's serial console on socket until the
// user types Ctrl-] (which detaches and leaves the guest running), the guest side
// closes, in reaches end of file, or ctx ends. When in is a terminal it is put in raw
// mode, so keys such as Ctrl-C go to the guest, and always restored before Attach
// returns. A one-line hint about Ctrl-] is written to out first.
//
// The guest's console shows only what it prints from now on; earlier output is in
// the serial log (see TailLines). After Attach returns, one pending read of in may
// still be outstanding until the next key press or end of input.
func Attach(ctx context.Context, socket string, in *os.File, out io.Writer) (err error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return fmt.Errorf("attach console: %w (is the guest running?)", err)
	}
	defer conn.Close()
	if fd := int(in.Fd()); term.IsTerminal(fd) {
		old, err := term.MakeRaw(fd)
		if err != nil {
			return fmt.Errorf("attach console: raw terminal: %w", err)
		}
		defer func() {
			if rerr := term.Restore(fd, old); rerr != nil && err == nil {
				err = fmt.Errorf("attach console: restore terminal: %w", rerr)
			}
		}()
	}
	fmt.Fprint(out, "Connected to the guest console; press Ctrl-] to detach.\r\n")
	return relay(ctx, conn, in, out)
}

// relay copies conn to out and in to conn until in yields DetachKey or ends, conn
// closes, or ctx ends.
func relay(ctx context.Context, conn net.Conn, in io.Reader, out io.Writer) error {
	fromGuest := make(chan error, 1)
	go func() {
		_, err := io.Copy(out, conn)
		fromGuest <- err
	}()
	toGuest := make(chan error, 1)
	go func() { toGuest <- copyUntilDetach(conn, in) }()

	var result error
	closed := false
	select {
	case <-ctx.Done():
		result = ctx.Err()
	case err := <-toGuest:
		if err != nil {
			result = fmt.Errorf("console input: %w", err)
		}
	case err := <-fromGuest:
		closed = true
		if err != nil && !errors.Is(err, net.ErrClosed) {
			result = fmt.Errorf("console: %w", err)
		}
	}
	conn.Close()
	if !closed {
		<-fromGuest // no more writes to out after this
	}
	if closed {
		fmt.Fprint(out, "\r\nThe guest console closed.\r\n")
	} else {
		fmt.Fprint(out, "\r\nDetached; the guest keeps running.\r\n")
	}
	return result
}

// copyUntilDetach copies in to w up to DetachKey or end of input.
func copyUntilDetach(w io.Writer, in io.Reader) error {
	buf := make([]byte, 4096)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			stop := false
			for i, c := range chunk {
				if c == DetachKey {
					chunk, stop = chunk[:i], true
					break
				}
			}
			if len(chunk) > 0 {
				if _, werr := w.Write(chunk); werr != nil {
					return werr
				}
			}
			if stop {
				return nil
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
