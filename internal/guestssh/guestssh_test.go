package guestssh

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func testKey(t *testing.T) Key {
	t.Helper()
	k, err := EnsureKey(filepath.Join(t.TempDir(), "keys"))
	if err != nil {
		t.Fatal(err)
	}
	return k
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

type fixture struct {
	srv  *testServer
	key  Key
	kh   KnownHosts
	opts Options
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	key := testKey(t)
	srv := startServer(t, "127.0.0.1:0", key.Signer.PublicKey())
	kh := KnownHosts{Path: filepath.Join(t.TempDir(), "known_hosts")}
	return &fixture{srv: srv, key: key, kh: kh, opts: Options{
		Addr: srv.Addr, User: "armdev", Key: key, HostKey: kh.Callback(false), Timeout: 5 * time.Second,
	}}
}

func (f *fixture) dial(t *testing.T) *Client {
	t.Helper()
	c, err := Dial(context.Background(), f.opts)
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
	k1, k2, k3 := newHostKey(t).PublicKey(), newHostKey(t).PublicKey(), newHostKey(t).PublicKey()
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
	f := newFixture(t)
	c := f.dial(t)
	c.Close()
	keys, err := f.kh.Pinned(f.srv.Addr)
	if err != nil || len(keys) != 1 || !bytes.Equal(keys[0].Marshal(), f.srv.HostKey().Marshal()) {
		t.Fatalf("pinned %v, %v; want the server's key", keys, err)
	}
	f.dial(t).Close() // same key again

	f.srv.SetHostKey(newHostKey(t))
	_, err = Dial(context.Background(), f.opts)
	if !errors.Is(err, ErrHostKeyMismatch) {
		t.Fatalf("Dial after host key change: %v", err)
	}
	// WaitReady gives up at once: waiting cannot fix a mismatch.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := WaitReady(ctx, f.opts, 100*time.Millisecond, nil); !errors.Is(err, ErrHostKeyMismatch) {
		t.Fatalf("WaitReady: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("WaitReady took %s on a mismatch", d)
	}

	o := f.opts
	o.HostKey = f.kh.Callback(true)
	c, err = Dial(context.Background(), o)
	if err != nil {
		t.Fatalf("Dial with allowRepin: %v", err)
	}
	c.Close()
	keys, _ = f.kh.Pinned(f.srv.Addr)
	if len(keys) != 1 || !bytes.Equal(keys[0].Marshal(), f.srv.HostKey().Marshal()) {
		t.Error("allowRepin did not pin the new key")
	}
}

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

func TestWaitReadyDelayedStart(t *testing.T) {
	key := testKey(t)
	addr := freeAddr(t)
	kh := KnownHosts{Path: filepath.Join(t.TempDir(), "known_hosts")}
	opts := Options{Addr: addr, User: "armdev", Key: key, HostKey: kh.Callback(false), Timeout: 5 * time.Second}

	var ticks atomic.Int32
	third := make(chan struct{})
	onTick := func() {
		if ticks.Add(1) == 3 {
			close(third)
		}
	}
	started := make(chan time.Time, 1)
	go func() {
		<-third
		startServer(t, addr, key.Signer.PublicKey())
		started <- time.Now()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := WaitReady(ctx, opts, 100*time.Millisecond, onTick)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ready := time.Now()
	if n := ticks.Load(); n < 3 {
		t.Errorf("ready after %d failed polls, want >= 3", n)
	}
	lag := ready.Sub(recv(t, "server start", started))
	t.Logf("failed polls: %d; ready %s after the server started listening", ticks.Load(), lag)
	if lag > 2*time.Second {
		t.Errorf("noticed readiness %s late", lag)
	}
	if st, err := c.Run(ctx, "true", nil, nil, nil); err != nil || st != 0 {
		t.Errorf("Run after WaitReady: %d, %v", st, err)
	}
}

func TestWaitReadyTimeoutReportsLastError(t *testing.T) {
	key := testKey(t)
	kh := KnownHosts{Path: filepath.Join(t.TempDir(), "known_hosts")}
	opts := Options{User: "armdev", Key: key, HostKey: kh.Callback(false), Timeout: 2 * time.Second}

	// Like QEMU's hostfwd before the guest's sshd is up: TCP accepted, then closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	// A server that does not know our key.
	stranger := startServer(t, "127.0.0.1:0", newHostKey(t).PublicKey())

	for _, tc := range []struct {
		name, addr string
		want       []string
	}{
		{"nothing listening", freeAddr(t), []string{"tcp connect", "refused"}},
		{"accept and close", ln.Addr().String(), []string{"ssh handshake"}},
		{"key not authorized", stranger.Addr, []string{"authentication", "unable to authenticate"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := opts
			o.Addr = tc.addr
			ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
			defer cancel()
			var ticks int
			c, err := WaitReady(ctx, o, 100*time.Millisecond, func() { ticks++ })
			if err == nil {
				c.Close()
				t.Fatal("WaitReady succeeded")
			}
			if ticks < 2 {
				t.Errorf("only %d attempts in 700ms", ticks)
			}
			for _, w := range append(tc.want, tc.addr, "not ready") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestRun(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t)
	ctx := context.Background()

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
	f := newFixture(t)
	c := f.dial(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := make(chan error, 1)
	go func() {
		_, err := c.Run(ctx, "sleep 30", nil, nil, nil)
		res <- err
	}()
	recv(t, "exec", f.srv.execs)
	start := time.Now()
	cancel()
	err := recv(t, "Run to return", res)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run after cancel: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Run returned %s after cancel", d)
	}
	if sig := recv(t, "signal", f.srv.signals); sig != "TERM" {
		t.Errorf("signal %q, want TERM", sig)
	}
	// The connection is still usable.
	if st, err := c.Run(context.Background(), "exit 5", nil, nil, nil); err != nil || st != 5 {
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
	f := newFixture(t)
	c := f.dial(t)
	var size atomic.Value
	size.Store([2]int{120, 40})
	getSize := func() (int, int, error) { s := size.Load().([2]int); return s[0], s[1], nil }
	resize := make(chan os.Signal, 1)
	stdinR, stdinW := newPipe()
	var out, errOut bytes.Buffer // separate: the session copies them concurrently
	res := make(chan int, 1)
	errc := make(chan error, 1)
	go func() {
		st, err := c.pty(context.Background(), "cat >/dev/null; exit 4", stdinR, &out, &errOut, "xterm-test", getSize, resize)
		res <- st
		errc <- err
	}()
	p := recv(t, "pty-req", f.srv.ptys)
	if p != (ptyReq{Term: "xterm-test", Cols: 120, Rows: 40}) {
		t.Errorf("pty-req = %+v", p)
	}
	recv(t, "exec", f.srv.execs)
	size.Store([2]int{100, 30})
	resize <- nil
	if w := recv(t, "window-change", f.srv.winches); w != [2]uint32{100, 30} {
		t.Errorf("window-change = %v, want [100 30]", w)
	}
	stdinW.Close()
	if st := recv(t, "exit", res); st != 4 {
		t.Errorf("exit status %d, want 4", st)
	}
	if err := <-errc; err != nil {
		t.Error(err)
	}
}

func TestKeepAlive(t *testing.T) {
	f := newFixture(t)
	o := f.opts
	o.KeepAlive = 20 * time.Millisecond
	c, err := Dial(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "3 keepalives", func() bool { return f.srv.keepalives.Load() >= 3 })
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestWaitReadyHangingAttempts emulates QEMU's user-mode forward before the
// guest's network is up: connections are accepted and then hang. Once the
// guest answers, WaitReady must notice quickly although older attempts are
// still hanging (and would only end at their 30 s timeout).
func TestWaitReadyHangingAttempts(t *testing.T) {
	key := testKey(t)
	srv := startServer(t, "127.0.0.1:0", key.Signer.PublicKey())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var up atomic.Bool
	hung := make(chan net.Conn, 100)
	t.Cleanup(func() {
		close(hung)
		for c := range hung {
			c.Close()
		}
	})
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			if up.Load() {
				srv.serveConn(c)
			} else {
				hung <- c // held open, silent
			}
		}
	}()
	kh := KnownHosts{Path: filepath.Join(t.TempDir(), "known_hosts")}
	opts := Options{Addr: ln.Addr().String(), User: "armdev", Key: key, HostKey: kh.Callback(false), Timeout: 30 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	res := make(chan error, 1)
	var c *Client
	go func() {
		var err error
		c, err = WaitReady(ctx, opts, 100*time.Millisecond, nil)
		res <- err
	}()
	eventually(t, "two hanging attempts", func() bool { return accepted.Load() >= 2 })
	up.Store(true)
	upAt := time.Now()
	if err := recv(t, "WaitReady", res); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lag := time.Since(upAt)
	t.Logf("%d connections; ready %s after the guest came up", accepted.Load(), lag)
	if lag > 3*time.Second {
		t.Errorf("noticed readiness %s late", lag)
	}
}
