package guestssh

import (
	"bytes"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/rsonpath/armdev/internal/guestssh/sshtest"
)

// openPTY returns the master and slave of a new pseudo-terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Skipf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Skipf("pty number: %v", err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Skipf("open pty slave: %v", err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

func setSize(t *testing.T, f *os.File, cols, rows uint16) {
	t.Helper()
	if err := unix.IoctlSetWinsize(int(f.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Col: cols, Row: rows}); err != nil {
		t.Fatal(err)
	}
}

func termios(t *testing.T, f *os.File) unix.Termios {
	t.Helper()
	tio, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	return *tio
}

// TestShellOnRealPTY runs Shell on a real terminal: size and TERM reach the
// server, the terminal is raw during the session and restored after it,
// SIGWINCH sends the new size, and the exit status comes back.
func TestShellOnRealPTY(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial(t)
	master, slave := openPTY(t)
	setSize(t, slave, 111, 33)
	before := termios(t, slave)
	if before.Lflag&unix.ICANON == 0 {
		t.Fatal("new pty is not in canonical mode")
	}

	var mu sync.Mutex
	var screen bytes.Buffer
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			mu.Lock()
			screen.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()

	type result struct {
		st  int
		err error
	}
	res := make(chan result, 1)
	go func() {
		st, err := c.Shell(t.Context(), "read x; echo got-$x; exit 6", slave, slave, "xterm-real")
		res <- result{st, err}
	}()
	if s := recv(t, "the session to start", f.sessions); !s.PTY || s.Term != "xterm-real" || s.Window != (sshtest.Window{Cols: 111, Rows: 33}) {
		t.Errorf("session PTY %v, TERM %q, window %+v; want xterm-real 111x33", s.PTY, s.Term, s.Window)
	}
	if raw := termios(t, slave); raw.Lflag&(unix.ICANON|unix.ECHO) != 0 {
		t.Errorf("terminal not raw during the session: lflag %#x", raw.Lflag)
	}

	setSize(t, slave, 90, 20)
	if err := syscall.Kill(os.Getpid(), syscall.SIGWINCH); err != nil {
		t.Fatal(err)
	}
	if w := recv(t, "window-change", f.resizes); w != (sshtest.Window{Cols: 90, Rows: 20}) {
		t.Errorf("window-change = %+v, want 90x20", w)
	}

	if _, err := master.Write([]byte("abc\n")); err != nil {
		t.Fatal(err)
	}
	r := recv(t, "Shell to return", res)
	if r.err != nil || r.st != 6 {
		t.Errorf("Shell = %d, %v; want 6", r.st, r.err)
	}
	eventually(t, "remote output on the terminal", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return bytes.Contains(screen.Bytes(), []byte("got-abc"))
	})
	after := termios(t, slave)
	if after.Lflag != before.Lflag || after.Iflag != before.Iflag || after.Oflag != before.Oflag || after.Cflag != before.Cflag {
		t.Errorf("terminal not restored: before %+v, after %+v", before, after)
	}
}
