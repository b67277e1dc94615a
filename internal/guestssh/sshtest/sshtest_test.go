package sshtest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// dial logs in to srv as user with key, pinning srv's current host key.
func dial(t *testing.T, srv *Server, user string, key ssh.Signer) (*ssh.Client, error) {
	t.Helper()
	c, err := ssh.Dial("tcp", srv.Addr(), &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(key)},
		HostKeyCallback: ssh.FixedHostKey(srv.HostKey()),
		Timeout:         5 * time.Second,
	})
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// run runs cmd in a new session and returns its exit status and output.
func run(t *testing.T, c *ssh.Client, cmd, stdin string) (int, string, string) {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out, errb bytes.Buffer
	s.Stdin, s.Stdout, s.Stderr = strings.NewReader(stdin), &out, &errb
	err = s.Run(cmd)
	var exit *ssh.ExitError
	switch {
	case err == nil:
		return 0, out.String(), errb.String()
	case errors.As(err, &exit):
		return exit.ExitStatus(), out.String(), errb.String()
	default:
		t.Fatalf("run %q: %v", cmd, err)
		return 0, "", ""
	}
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestExecHandlerAndRecords(t *testing.T) {
	key := NewSigner(t)
	dir := t.TempDir()
	srv := NewServer(t, Options{Authorized: map[string][]ssh.PublicKey{"armdev": {key.PublicKey()}}, Handler: ExecHandler(dir)})
	c, err := dial(t, srv, "armdev", key)
	if err != nil {
		t.Fatal(err)
	}
	st, out, errOut := run(t, c, "pwd; cat; echo oops >&2; exit 3", "from stdin\n")
	if st != 3 || out != dir+"\nfrom stdin\n" || errOut != "oops\n" {
		t.Errorf("got %d, out %q, err %q", st, out, errOut)
	}
	if st, _, _ := run(t, c, "kill -TERM $$", ""); st != 128+15 {
		t.Errorf("killed by TERM: status %d, want 143", st)
	}
	want := []Record{{"armdev", "pwd; cat; echo oops >&2; exit 3"}, {"armdev", "kill -TERM $$"}}
	if got := srv.Commands(); !slices.Equal(got, want) {
		t.Errorf("Commands() = %q, want %q", got, want)
	}
}

func TestAuthorizationPerUser(t *testing.T) {
	key, other := NewSigner(t), NewSigner(t)
	srv := NewServer(t, Options{Authorized: map[string][]ssh.PublicKey{"armdev": {key.PublicKey()}}})
	for _, tc := range []struct {
		user string
		key  ssh.Signer
	}{{"armdev", other}, {"root", key}} {
		if _, err := dial(t, srv, tc.user, tc.key); err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
			t.Errorf("%s with the wrong key or user: %v, want a refusal", tc.user, err)
		}
	}
	srv.Authorize("root", key.PublicKey())
	if _, err := dial(t, srv, "root", key); err != nil {
		t.Errorf("root after Authorize: %v", err)
	}
	if _, err := dial(t, srv, "armdev", key); err != nil {
		t.Errorf("armdev: %v", err)
	}
}

func TestSetHostKey(t *testing.T) {
	key := NewSigner(t)
	srv := NewServer(t, Options{Authorized: map[string][]ssh.PublicKey{"u": {key.PublicKey()}}})
	old := srv.HostKey()
	srv.SetHostKey(NewSigner(t))
	if bytes.Equal(old.Marshal(), srv.HostKey().Marshal()) {
		t.Fatal("HostKey() did not change")
	}
	_, err := ssh.Dial("tcp", srv.Addr(), &ssh.ClientConfig{
		User: "u", Auth: []ssh.AuthMethod{ssh.PublicKeys(key)}, HostKeyCallback: ssh.FixedHostKey(old), Timeout: 5 * time.Second,
	})
	if err == nil {
		t.Error("the old host key was still accepted")
	}
}

// TestHang: held connections stay silent, even after SetHang(false); new
// ones are answered.
func TestHang(t *testing.T) {
	srv := NewServer(t, Options{Hang: true})
	held, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	waitFor(t, "the connection to be accepted", func() bool { return srv.Accepted() == 1 })
	srv.SetHang(false)
	fresh, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	_ = fresh.SetReadDeadline(time.Now().Add(5 * time.Second))
	banner := make([]byte, 4)
	if _, err := fresh.Read(banner); err != nil || string(banner) != "SSH-" {
		t.Errorf("new connection: %q, %v; want the SSH banner", banner, err)
	}
	_ = held.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := held.Read(banner); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("held connection: %d bytes, %v; want silence", n, err)
	}
	if n := srv.Accepted(); n != 2 {
		t.Errorf("Accepted() = %d, want 2", n)
	}
}

// TestSessionDetails: a handler sees the user, the PTY request, window
// changes and signals; keepalives are counted; Close ends a running session.
func TestSessionDetails(t *testing.T) {
	key := NewSigner(t)
	got := make(chan *Session, 1)
	events := make(chan string, 10)
	srv := NewServer(t, Options{
		Authorized: map[string][]ssh.PublicKey{"armdev": {key.PublicKey()}},
		Handler: func(s *Session) int {
			got <- s
			for {
				select {
				case w := <-s.Resized:
					events <- fmt.Sprintf("resize %dx%d", w.Cols, w.Rows)
				case sig := <-s.Signals:
					events <- "signal " + sig
				case <-s.Context().Done():
					events <- "done"
					return 0
				}
			}
		},
	})
	c, err := dial(t, srv, "armdev", key)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.SendRequest("keepalive@openssh.com", true, nil); err != nil {
		t.Fatal(err)
	}
	if n := srv.KeepAlives(); n != 1 {
		t.Errorf("KeepAlives() = %d, want 1", n)
	}
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RequestPty("xterm-test", 40, 120, ssh.TerminalModes{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Shell(); err != nil {
		t.Fatal(err)
	}
	sess := <-got
	if sess.User != "armdev" || sess.Command != "" || !sess.PTY || sess.Term != "xterm-test" || sess.Window != (Window{120, 40}) {
		t.Errorf("session = %+v", sess)
	}
	if err := s.WindowChange(30, 100); err != nil {
		t.Fatal(err)
	}
	if err := s.Signal(ssh.SIGINT); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"resize 100x30", "signal INT"} {
		if e := <-events; e != want {
			t.Errorf("event %q, want %q", e, want)
		}
	}
	srv.Close()
	if e := <-events; e != "done" {
		t.Errorf("after Close: %q, want done", e)
	}
	if _, err := net.Dial("tcp", srv.Addr()); err == nil {
		t.Error("still listening after Close")
	}
}
