package qemuvm

import (
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rsonpath/armdev/internal/testutil"
)

// echoServer accepts one connection on a unix socket and echoes it upper-cased,
// until closed; received gets everything it read.
func echoServer(t *testing.T) (sock string, received *testutil.SyncBuffer, conns <-chan net.Conn) {
	t.Helper()
	sock = filepath.Join(t.TempDir(), "serial.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	received = &testutil.SyncBuffer{}
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		ch <- c
		buf := make([]byte, 256)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				received.Write(buf[:n])
				c.Write(bytes.ToUpper(buf[:n]))
			}
			if err != nil {
				return
			}
		}
	}()
	return sock, received, ch
}

func TestAttachDetach(t *testing.T) {
	sock, received, _ := echoServer(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	out := &testutil.SyncBuffer{}
	done := make(chan error, 1)
	go func() { done <- Attach(t.Context(), sock, r, out) }()

	if _, err := w.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(out.String(), "HELLO") })
	if _, err := w.Write([]byte("bye\x1dnot sent")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The connection is closed now: what the guest got is final once "bye" is in.
	waitFor(t, func() bool { return strings.Contains(received.String(), "bye") })
	if got := received.String(); got != "hellobye" {
		t.Errorf("guest received %q, want %q", got, "hellobye")
	}
	if s := out.String(); !strings.HasPrefix(s, "Connected to the guest console; press Ctrl-] to detach.") || !strings.Contains(s, "Detached") {
		t.Errorf("output %q", s)
	}
}

func TestAttachGuestCloses(t *testing.T) {
	sock, _, conns := echoServer(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	out := &testutil.SyncBuffer{}
	done := make(chan error, 1)
	go func() { done <- Attach(t.Context(), sock, r, out) }()
	c := <-conns
	c.Write([]byte("login: "))
	c.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	w.Close() // ends the input read left pending by Attach
	if s := out.String(); !strings.Contains(s, "login: ") || !strings.Contains(s, "console closed") {
		t.Errorf("output %q", s)
	}
}

func TestAttachNoSocket(t *testing.T) {
	err := Attach(t.Context(), filepath.Join(t.TempDir(), "none.sock"), os.Stdin, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "is the guest running?") {
		t.Fatalf("Attach = %v", err)
	}
}
