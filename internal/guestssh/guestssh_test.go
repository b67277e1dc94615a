package guestssh

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rsonpath/armdev/internal/guestssh/sshtest"
)

func testKey(t *testing.T) Key {
	t.Helper()
	k, err := EnsureKey(filepath.Join(t.TempDir(), "keys"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// authorized lets key log in as armdev.
func authorized(key Key) map[string][]ssh.PublicKey {
	return map[string][]ssh.PublicKey{"armdev": {key.Signer.PublicKey()}}
}

// eventually polls cond until it holds or a deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func recv[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// fixture is a test SSH server that lets the test key in as armdev, and
// shows the test each session that starts and its window changes.
type fixture struct {
	srv      *sshtest.Server
	key      Key
	kh       KnownHosts
	opts     Options
	sessions chan *sshtest.Session
	resizes  chan sshtest.Window
}

// newFixture serves sessions with h (nil: the host's shell).
func newFixture(t *testing.T, h sshtest.Handler) *fixture {
	t.Helper()
	if h == nil {
		h = sshtest.ExecHandler(t.TempDir())
	}
	f := &fixture{key: testKey(t), sessions: make(chan *sshtest.Session, 100), resizes: make(chan sshtest.Window, 100)}
	f.srv = sshtest.NewServer(t, sshtest.Options{Authorized: authorized(f.key), Handler: func(s *sshtest.Session) int {
		f.sessions <- s
		go func() {
			for {
				select {
				case w := <-s.Resized:
					f.resizes <- w
				case <-s.Context().Done():
					return
				}
			}
		}()
		return h(s)
	}})
	f.kh = KnownHosts{Path: filepath.Join(t.TempDir(), "known_hosts")}
	f.opts = Options{Addr: f.srv.Addr(), User: "armdev", Key: f.key, HostKey: f.kh.Callback(false), Timeout: 5 * time.Second}
	return f
}

func (f *fixture) dial(t *testing.T) *Client {
	t.Helper()
	c, err := Dial(t.Context(), f.opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestEnsureKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "ssh")
	k, err := EnsureKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	priv := filepath.Join(dir, "id_ed25519")
	if k.PrivatePath != priv {
		t.Errorf("PrivatePath = %q, want %q", k.PrivatePath, priv)
	}
	for path, want := range map[string]os.FileMode{priv: 0o600, priv + ".pub": 0o644} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %04o, want %04o", path, fi.Mode().Perm(), want)
		}
	}
	data, _ := os.ReadFile(priv)
	if !bytes.HasPrefix(data, []byte("-----BEGIN OPENSSH PRIVATE KEY-----")) {
		t.Errorf("private key is not OpenSSH PEM: %.40q", data)
	}
	if k.Signer.PublicKey().Type() != ssh.KeyAlgoED25519 {
		t.Errorf("key type %s", k.Signer.PublicKey().Type())
	}
	if strings.Contains(k.AuthorizedKey, "\n") || !strings.HasPrefix(k.AuthorizedKey, "ssh-ed25519 AAAA") || !strings.HasSuffix(k.AuthorizedKey, " armdev") {
		t.Errorf("AuthorizedKey = %q", k.AuthorizedKey)
	}
	pub, _ := os.ReadFile(priv + ".pub")
	if string(pub) != k.AuthorizedKey+"\n" {
		t.Errorf(".pub = %q, want %q", pub, k.AuthorizedKey+"\n")
	}
	// OpenSSH itself reads the private key and derives the same public key.
	out, err := exec.Command("ssh-keygen", "-y", "-f", priv).Output()
	if err != nil {
		t.Fatalf("ssh-keygen -y: %v", err)
	}
	if got, want := strings.Fields(string(out))[1], strings.Fields(k.AuthorizedKey)[1]; got != want {
		t.Errorf("ssh-keygen derived %s, want %s", got, want)
	}

	k2, err := EnsureKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k2.Signer.PublicKey().Marshal(), k.Signer.PublicKey().Marshal()) || k2.AuthorizedKey != k.AuthorizedKey {
		t.Error("reload gave a different key")
	}

	// A lost .pub is rewritten from the private key.
	os.Remove(priv + ".pub")
	if _, err := EnsureKey(dir); err != nil {
		t.Fatal(err)
	}
	if pub2, _ := os.ReadFile(priv + ".pub"); !bytes.Equal(pub2, pub) {
		t.Errorf("rewritten .pub = %q", pub2)
	}

	if err := os.Chmod(priv, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = EnsureKey(dir)
	if err == nil || !strings.Contains(err.Error(), "chmod 600 "+priv) {
		t.Errorf("0644 key: err = %v, want a chmod 600 hint", err)
	}
}

func TestKnownHostsCallback(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kh", "known_hosts")
	kh := KnownHosts{Path: path}
	k1, k2, k3 := sshtest.NewSigner(t).PublicKey(), sshtest.NewSigner(t).PublicKey(), sshtest.NewSigner(t).PublicKey()
	a := "127.0.0.1:2222"
	b := "127.0.0.1:3333"
	remote := func(s string) net.Addr { r, _ := net.ResolveTCPAddr("tcp", s); return r }

	strict := kh.Callback(false)
	if err := strict(a, remote(a), k1); err != nil {
		t.Fatalf("first contact: %v", err)
	}
	if err := strict(b, remote(b), k3); err != nil {
		t.Fatalf("first contact b: %v", err)
	}
	data, _ := os.ReadFile(path)
	wantA := "[127.0.0.1]:2222 " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k1)))
	if !strings.Contains(string(data), wantA+"\n") {
		t.Errorf("known_hosts = %q, want line %q", data, wantA)
	}
	if err := strict(a, remote(a), k1); err != nil {
		t.Errorf("same key: %v", err)
	}
	err := strict(a, remote(a), k2)
	if !errors.Is(err, ErrHostKeyMismatch) {
		t.Fatalf("changed key: err = %v, want ErrHostKeyMismatch", err)
	}
	for _, want := range []string{"127.0.0.1:2222", path, "remove that file", "someone else"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("mismatch error %q lacks %q", err, want)
		}
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, data) {
		t.Error("a refused key changed the file")
	}

	if err := kh.Callback(true)(a, remote(a), k2); err != nil {
		t.Fatalf("repin: %v", err)
	}
	if err := strict(a, remote(a), k2); err != nil {
		t.Errorf("after repin, new key: %v", err)
	}
	if err := strict(a, remote(a), k1); !errors.Is(err, ErrHostKeyMismatch) {
		t.Errorf("after repin, old key: err = %v", err)
	}
	if err := strict(b, remote(b), k3); err != nil {
		t.Errorf("other port's pin lost: %v", err)
	}
	if keys, _ := kh.Pinned(a); len(keys) != 1 {
		t.Errorf("%d pins for %s, want 1", len(keys), a)
	}
	if got := kh.HostKeyAlgorithms(a); len(got) != 1 || got[0] != ssh.KeyAlgoED25519 {
		t.Errorf("HostKeyAlgorithms = %v", got)
	}

	// OpenSSH finds the pin in our file.
	out, err := exec.Command("ssh-keygen", "-F", "[127.0.0.1]:2222", "-f", path).Output()
	if err != nil || !strings.Contains(string(out), strings.Fields(string(ssh.MarshalAuthorizedKey(k2)))[1]) {
		t.Errorf("ssh-keygen -F: %v\n%s", err, out)
	}

	if err := kh.Forget(a); err != nil {
		t.Fatal(err)
	}
	if keys, _ := kh.Pinned(a); len(keys) != 0 {
		t.Errorf("Forget left %d pins", len(keys))
	}
	if keys, _ := kh.Pinned(b); len(keys) != 1 {
		t.Errorf("Forget(a) removed b's pin")
	}
	if err := strict(a, remote(a), k1); err != nil {
		t.Errorf("after Forget, first contact again: %v", err)
	}
}

func TestDialPinsAndRefusesChangedHostKey(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial(t)
	c.Close()
	keys, err := f.kh.Pinned(f.srv.Addr())
	if err != nil || len(keys) != 1 || !bytes.Equal(keys[0].Marshal(), f.srv.HostKey().Marshal()) {
		t.Fatalf("pinned %v, %v; want the server's key", keys, err)
	}
	f.dial(t).Close() // same key again

	f.srv.SetHostKey(sshtest.NewSigner(t))
	_, err = Dial(t.Context(), f.opts)
	if !errors.Is(err, ErrHostKeyMismatch) {
		t.Fatalf("Dial after host key change: %v", err)
	}

	o := f.opts
	o.HostKey = f.kh.Callback(true)
	c, err = Dial(t.Context(), o)
	if err != nil {
		t.Fatalf("Dial with allowRepin: %v", err)
	}
	c.Close()
	keys, _ = f.kh.Pinned(f.srv.Addr())
	if len(keys) != 1 || !bytes.Equal(keys[0].Marshal(), f.srv.HostKey().Marshal()) {
		t.Error("allowRepin did not pin the new key")
	}
}

// TestDialStages: each failure names the stage that failed.
func TestDialStages(t *testing.T) {
	f := newFixture(t, nil)
	broken := errors.New("known hosts unreadable")
	for _, tc := range []struct {
		name  string
		edit  func(*Options)
		stage Stage
	}{
		{"nothing listening", func(o *Options) { o.Addr = freeAddr(t) }, StageConnect},
		{"host key callback fails", func(o *Options) {
			o.HostKey = func(string, net.Addr, ssh.PublicKey) error { return broken }
		}, StageHostKey},
		{"user not authorized", func(o *Options) { o.User = "root" }, StageAuth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := f.opts
			tc.edit(&o)
			_, err := Dial(t.Context(), o)
			var d *DialError
			if !errors.As(err, &d) || d.Stage != tc.stage {
				t.Fatalf("Dial: %v; want a %s DialError", err, tc.stage)
			}
			if tc.stage == StageHostKey && !errors.Is(err, broken) {
				t.Errorf("host key error %v does not wrap the callback's", err)
			}
		})
	}
}

// freeAddr returns a 127.0.0.1 address nothing listens on (for now).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestRun(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial(t)
	ctx := t.Context()

	for _, want := range []int{0, 3} {
		st, err := c.Run(ctx, Quote([]string{"exit", string(rune('0' + want))}), nil, nil, nil)
		if err != nil || st != want {
			t.Errorf("exit %d: got %d, %v", want, st, err)
		}
	}

	var out, errb bytes.Buffer
	in := strings.Repeat("line of stdin\n", 10000)
	st, err := c.Run(ctx, "cat; echo done", strings.NewReader(in), &out, &errb)
	if err != nil || st != 0 || out.String() != in+"done\n" || errb.Len() != 0 {
		t.Errorf("cat: %d, %v, %d bytes out (want %d), stderr %q", st, err, out.Len(), len(in)+5, errb.String())
	}

	out.Reset()
	errb.Reset()
	st, err = c.Run(ctx, "echo to-out; echo to-err >&2; exit 7", nil, &out, &errb)
	if err != nil || st != 7 || out.String() != "to-out\n" || errb.String() != "to-err\n" {
		t.Errorf("separate streams: %d, %v, out %q, err %q", st, err, out.String(), errb.String())
	}

	// arm-dev-ssh -- sh -c 'echo "a  b"' keeps its quoting through the remote shell.
	out.Reset()
	cmd := Quote([]string{"sh", "-c", `echo "a  b"`})
	if want := `sh -c 'echo "a  b"'`; cmd != want {
		t.Errorf("Quote = %s, want %s", cmd, want)
	}
	if _, err := c.Run(ctx, cmd, nil, &out, nil); err != nil || out.String() != "a  b\n" {
		t.Errorf("remote sh -c: %q, %v", out.String(), err)
	}

	out.Reset()
	args := []string{"", "it's", "a  b", "$HOME", "*", "x\ny", `back\slash`, "-n", `"dq"`, "a=b", "~", "#c", "tab\there", "é"}
	if _, err := c.Run(ctx, Quote(append([]string{"printf", "[%s]"}, args...)), nil, &out, nil); err != nil {
		t.Fatal(err)
	}
	if want := "[" + strings.Join(args, "][") + "]"; out.String() != want {
		t.Errorf("remote argv = %q, want %q", out.String(), want)
	}
}

func TestRunCancel(t *testing.T) {
	signals := make(chan string, 1)
	shell := sshtest.ExecHandler(t.TempDir())
	f := newFixture(t, func(s *sshtest.Session) int {
		if s.Command != "wait for a signal" {
			return shell(s)
		}
		select {
		case sig := <-s.Signals:
			signals <- sig
			return 128 + 15
		case <-s.Context().Done():
			return -1
		}
	})
	c := f.dial(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	res := make(chan error, 1)
	go func() {
		_, err := c.Run(ctx, "wait for a signal", nil, nil, nil)
		res <- err
	}()
	recv(t, "the session to start", f.sessions)
	start := time.Now()
	cancel()
	err := recv(t, "Run to return", res)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run after cancel: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Run returned %s after cancel", d)
	}
	if sig := recv(t, "signal", signals); sig != "TERM" {
		t.Errorf("signal %q, want TERM", sig)
	}
	// The connection is still usable.
	if st, err := c.Run(t.Context(), "exit 5", nil, nil, nil); err != nil || st != 5 {
		t.Errorf("Run after a cancelled one: %d, %v", st, err)
	}
}

func TestQuote(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ls", "-la", "/tmp"}, "ls -la /tmp"},
		{[]string{"sh", "-c", `echo "a  b"`}, `sh -c 'echo "a  b"'`},
		{[]string{"echo", ""}, "echo ''"},
		{[]string{"echo", "it's"}, `echo 'it'\''s'`},
		{[]string{"echo", "$HOME", "*.go"}, `echo '$HOME' '*.go'`},
		{[]string{"make", "CC=gcc"}, "make CC=gcc"},
		{[]string{"FOO=1", "env"}, "'FOO=1' env"},
		{[]string{"a@b:c/d.e,f+g%h_i-j"}, "a@b:c/d.e,f+g%h_i-j"},
		{nil, ""},
	} {
		if got := Quote(tc.args); got != tc.want {
			t.Errorf("Quote(%q) = %s, want %s", tc.args, got, tc.want)
		}
	}
	// Round trip through the local /bin/sh: argv arrives unchanged.
	args := []string{"", "'", "''", `\`, "a b", "a\tb", "a\nb", "!x", "${x}", "`id`", "&;|<>()", "~root", "-", "--", "a=b", "ü"}
	out, err := exec.Command("/bin/sh", "-c", Quote(append([]string{"printf", "<%s>"}, args...))).Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "<" + strings.Join(args, "><") + ">"; string(out) != want {
		t.Errorf("sh round trip = %q, want %q", out, want)
	}
}

func TestPTYRequestAndWindowChange(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial(t)
	var size atomic.Value
	size.Store([2]int{120, 40})
	getSize := func() (int, int, error) { s := size.Load().([2]int); return s[0], s[1], nil }
	resize := make(chan os.Signal, 1)
	stdinR, stdinW := io.Pipe()
	var out, errOut bytes.Buffer // separate: the session copies them concurrently
	type result struct {
		st  int
		err error
	}
	res := make(chan result, 1)
	go func() {
		st, err := c.pty(t.Context(), "cat >/dev/null; exit 4", stdinR, &out, &errOut, "xterm-test", getSize, resize)
		res <- result{st, err}
	}()
	s := recv(t, "the session to start", f.sessions)
	if !s.PTY || s.Term != "xterm-test" || s.Window != (sshtest.Window{Cols: 120, Rows: 40}) {
		t.Errorf("session PTY %v, TERM %q, window %+v; want xterm-test 120x40", s.PTY, s.Term, s.Window)
	}
	size.Store([2]int{100, 30})
	resize <- nil
	if w := recv(t, "window-change", f.resizes); w != (sshtest.Window{Cols: 100, Rows: 30}) {
		t.Errorf("window-change = %+v, want 100x30", w)
	}
	stdinW.Close()
	if r := recv(t, "exit", res); r.st != 4 || r.err != nil {
		t.Errorf("exit %d, %v; want 4", r.st, r.err)
	}
}

func TestKeepAlive(t *testing.T) {
	f := newFixture(t, nil)
	o := f.opts
	o.KeepAlive = 20 * time.Millisecond
	c, err := Dial(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "3 keepalives", func() bool { return f.srv.KeepAlives() >= 3 })
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
