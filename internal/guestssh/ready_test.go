package guestssh

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rsonpath/armdev/internal/guestssh/sshtest"
)

// readyAimAfterSSHD is the bench figure ready_after_sshd_seconds' aim: from
// the guest's sshd first answering to WaitReady returning.
const readyAimAfterSSHD = 500 * time.Millisecond

// waitOptions are Options for addr with a fresh key and known_hosts.
func waitOptions(t *testing.T, addr string) Options {
	t.Helper()
	kh := KnownHosts{Path: filepath.Join(t.TempDir(), "known_hosts")}
	return Options{Addr: addr, User: "armdev", Key: testKey(t), HostKey: kh.Callback(false), Timeout: 5 * time.Second}
}

type waitResult struct {
	c   *Client
	err error
	at  time.Time
}

// waitReady runs WaitReady in the background and delivers its result and
// the moment it returned; onTick counts polls in ticks. A client the test
// did not take is closed at the end.
func waitReady(t *testing.T, ctx context.Context, o Options, ticks *atomic.Int32) <-chan waitResult {
	res := make(chan waitResult, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := WaitReady(ctx, o, DefaultPoll, func() { ticks.Add(1) })
		res <- waitResult{c, err, time.Now()}
	}()
	t.Cleanup(func() {
		<-done // t.Context() has ended by now
		select {
		case r := <-res:
			if r.c != nil {
				r.c.Close()
			}
		default:
		}
	})
	return res
}

// median of a few durations.
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestWaitReadyDelayedStart: nothing listens at first (connections are
// refused), then sshd starts at a known moment; WaitReady must log in
// within readyAimAfterSSHD of it.
func TestWaitReadyDelayedStart(t *testing.T) {
	var lags []time.Duration
	for range 5 {
		o := waitOptions(t, freeAddr(t))
		var ticks atomic.Int32
		res := waitReady(t, t.Context(), o, &ticks)
		eventually(t, "three polls", func() bool { return ticks.Load() >= 3 })
		up := time.Now()
		srv := sshtest.NewServer(t, sshtest.Options{Addr: o.Addr, Authorized: authorized(o.Key)})
		r := recv(t, "WaitReady", res)
		if r.err != nil {
			t.Fatal(r.err)
		}
		if st, err := r.c.Run(t.Context(), "true", nil, nil, nil); err != nil || st != 0 {
			t.Errorf("Run after WaitReady: %d, %v", st, err)
		}
		lags = append(lags, r.at.Sub(up))
		r.c.Close()
		srv.Close()
	}
	t.Logf("ready after sshd started listening: %v (median %v)", lags, median(lags))
	if m := median(lags); m > readyAimAfterSSHD {
		t.Errorf("median %v after sshd started listening, aim %v", m, readyAimAfterSSHD)
	}
}

// TestWaitReadyAfterHang is the bench figure ready_after_sshd_seconds with
// QEMU's user-mode forward emulated: connections are accepted and held
// silent until the guest comes up, and those held stay silent after it (as
// slirp's SYN back-off keeps them). WaitReady must notice within
// readyAimAfterSSHD although its older attempts still hang.
func TestWaitReadyAfterHang(t *testing.T) {
	var lags []time.Duration
	for range 5 {
		key := testKey(t)
		srv := sshtest.NewServer(t, sshtest.Options{Hang: true, Authorized: authorized(key)})
		o := waitOptions(t, srv.Addr())
		o.Key = key
		var ticks atomic.Int32
		res := waitReady(t, t.Context(), o, &ticks)
		eventually(t, "three hanging attempts", func() bool { return srv.Accepted() >= 3 })
		up := time.Now()
		srv.SetHang(false)
		r := recv(t, "WaitReady", res)
		if r.err != nil {
			t.Fatal(r.err)
		}
		lags = append(lags, r.at.Sub(up))
		r.c.Close()
		if n := srv.Accepted(); n < 4 {
			t.Errorf("%d connections: the winner cannot be a new one", n)
		}
	}
	t.Logf("ready_after_sshd behind hanging connections: %v (median %v)", lags, median(lags))
	if m := median(lags); m > readyAimAfterSSHD {
		t.Errorf("median %v after the guest came up, aim %v", m, readyAimAfterSSHD)
	}
}

// TestWaitReadyTimeoutListsFailingChecks: when ctx ends, the error names
// the address and each failing check with its cause and hint.
func TestWaitReadyTimeoutListsFailingChecks(t *testing.T) {
	// Like QEMU's forward once the guest's network is up but before its
	// sshd listens: TCP accepted, then closed.
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
	silent := sshtest.NewServer(t, sshtest.Options{Hang: true})
	stranger := sshtest.NewServer(t, sshtest.Options{}) // knows no key

	sshd := []string{`"the guest's sshd answers" failed`, "the guest has not finished booting"}
	for _, tc := range []struct {
		name, addr string
		want       []string
	}{
		{"nothing listening", freeAddr(t), append(sshd, "tcp connect", "refused")},
		{"accept and close", ln.Addr().String(), append(sshd, "ssh handshake: waiting for the SSH banner: EOF")},
		{"silent", silent.Addr(), append(sshd, "ssh handshake: waiting for the SSH banner: nothing received within 300ms")},
		{"key not authorized", stranger.Addr(), []string{`"the workspace key logs in as armdev" failed`, "authentication", "unable to authenticate", "does not accept", "id_ed25519.pub for armdev"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := waitOptions(t, tc.addr)
			o.Timeout = 300 * time.Millisecond // how long an attempt may stay silent
			ctx, cancel := context.WithTimeout(t.Context(), 900*time.Millisecond)
			defer cancel()
			var ticks int
			c, err := WaitReady(ctx, o, 100*time.Millisecond, func() { ticks++ })
			if err == nil {
				c.Close()
				t.Fatal("WaitReady succeeded")
			}
			if ticks < 5 {
				t.Errorf("onTick called %d times in 900ms, polling every 100ms", ticks)
			}
			for _, w := range append(tc.want, "guest at "+tc.addr+" not ready over SSH after") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") || strings.Count(err.Error(), tc.addr) != 1 {
				t.Errorf("error %q: want one line naming the address once", err)
			}
			if errors.Is(err, ErrAuthRefused) {
				t.Error("a refusal shorter than AuthGrace ended as ErrAuthRefused")
			}
		})
	}
}

// TestWaitReadyAuthRefused: sshd answers but refuses the key; WaitReady
// gives up once AuthGrace has passed, not at the deadline.
func TestWaitReadyAuthRefused(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{Authorized: map[string][]ssh.PublicKey{"someone": {sshtest.NewSigner(t).PublicKey()}}})
	o := waitOptions(t, srv.Addr())
	o.AuthGrace = time.Second
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	start := time.Now()
	c, err := WaitReady(ctx, o, 0, nil)
	took := time.Since(start)
	if err == nil {
		c.Close()
		t.Fatal("WaitReady succeeded")
	}
	t.Logf("gave up after %v: %v", took, err)
	if !errors.Is(err, ErrAuthRefused) {
		t.Fatalf("error %v is not ErrAuthRefused", err)
	}
	if took < o.AuthGrace || took > o.AuthGrace+time.Second {
		t.Errorf("gave up after %v, want within [%v, %v]", took, o.AuthGrace, o.AuthGrace+time.Second)
	}
	var a *AuthRefusedError
	if !errors.As(err, &a) || a.Addr != o.Addr || a.User != "armdev" || a.For < o.AuthGrace || a.For > took {
		t.Fatalf("AuthRefusedError = %+v", a)
	}
	if !strings.Contains(a.Err.Error(), "unable to authenticate") {
		t.Errorf("Err = %v, want the last refusal", a.Err)
	}
	for _, w := range []string{"refused the workspace key for user armdev", o.Addr} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
}

// TestWaitReadyAuthRefusedWithinGrace: the first refusals can be a race
// with the guest still writing keys; a key accepted within AuthGrace logs in.
func TestWaitReadyAuthRefusedWithinGrace(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	o := waitOptions(t, srv.Addr())
	o.AuthGrace = 5 * time.Second
	var ticks atomic.Int32
	res := waitReady(t, t.Context(), o, &ticks)
	eventually(t, "two refused attempts", func() bool { return srv.Accepted() >= 3 })
	srv.Authorize("armdev", o.Key.Signer.PublicKey())
	r := recv(t, "WaitReady", res)
	if r.err != nil {
		t.Fatalf("WaitReady after the key was authorized: %v", r.err)
	}
	r.c.Close()
}

// TestWaitReadyHostKeyFailuresAreFatal: waiting cannot fix a host key the
// pin refuses, nor a known_hosts that cannot be read.
func TestWaitReadyHostKeyFailuresAreFatal(t *testing.T) {
	f := newFixture(t, nil)
	f.dial(t).Close() // pins the key
	f.srv.SetHostKey(sshtest.NewSigner(t))
	broken := errors.New("known hosts unreadable")
	for _, tc := range []struct {
		name    string
		hostKey ssh.HostKeyCallback
		want    error
	}{
		{"mismatch", f.kh.Callback(false), ErrHostKeyMismatch},
		{"callback error", func(string, net.Addr, ssh.PublicKey) error { return broken }, broken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := f.opts
			o.HostKey = tc.hostKey
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			start := time.Now()
			_, err := WaitReady(ctx, o, 0, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("WaitReady: %v, want %v", err, tc.want)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("WaitReady took %v on a host key failure", d)
			}
		})
	}
	var m *HostKeyMismatchError
	if _, err := WaitReady(t.Context(), f.opts, 0, nil); !errors.As(err, &m) || err.Error() != m.Error() {
		t.Errorf("mismatch error %q: want the pin's own explanation, unwrapped", err)
	}
}
