package guestssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Defaults for Options.
const (
	DefaultTimeout   = 20 * time.Second
	DefaultKeepAlive = 30 * time.Second
)

// Options say how to reach the guest.
type Options struct {
	// Addr is host:port, normally 127.0.0.1:PORT.
	Addr string
	// User is the remote user.
	User string
	// Key authenticates the user.
	Key Key
	// HostKey checks the guest's host key, normally KnownHosts.Callback.
	HostKey ssh.HostKeyCallback
	// HostKeyAlgorithms to accept, in preference order; empty means
	// ssh-ed25519 first (see KnownHosts.HostKeyAlgorithms).
	HostKeyAlgorithms []string
	// Timeout bounds TCP connect plus SSH handshake; 0 means DefaultTimeout.
	Timeout time.Duration
	// KeepAlive is the interval of keepalive@openssh.com requests; 0 means
	// DefaultKeepAlive, negative disables them.
	KeepAlive time.Duration
}

func (o Options) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return DefaultTimeout
}

// Client is a connection to the guest. Close it when done.
type Client struct {
	ssh  *ssh.Client
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

// SSH returns the underlying x/crypto/ssh client (for port forwards, etc.).
func (c *Client) SSH() *ssh.Client { return c.ssh }

// Close stops the keepalives and closes the connection.
func (c *Client) Close() error {
	var err error
	c.once.Do(func() {
		close(c.stop)
		err = c.ssh.Close()
		c.wg.Wait()
	})
	return err
}

// Stage names the step of a connection attempt that failed.
type Stage string

// Stages of a connection attempt.
const (
	StageConnect   Stage = "tcp connect"
	StageHandshake Stage = "ssh handshake"
	StageAuth      Stage = "authentication"
)

// DialError is a failed connection attempt: which stage failed and why.
type DialError struct {
	// Addr is the address dialled.
	Addr string
	// Stage is the step that failed.
	Stage Stage
	// Err is the cause.
	Err error
}

// Error describes the failed stage and its cause.
func (e *DialError) Error() string {
	return fmt.Sprintf("ssh to %s: %s: %v", e.Addr, e.Stage, e.Err)
}

// Unwrap returns the cause.
func (e *DialError) Unwrap() error { return e.Err }

// Dial connects and authenticates to the guest, and starts keepalives.
func Dial(ctx context.Context, o Options) (*Client, error) {
	if o.HostKey == nil {
		return nil, errors.New("ssh: no host key callback: use KnownHosts.Callback")
	}
	if o.Key.Signer == nil {
		return nil, errors.New("ssh: no key: use EnsureKey")
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout())
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", o.Addr)
	if err != nil {
		return nil, &DialError{Addr: o.Addr, Stage: StageConnect, Err: err}
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stopClose := context.AfterFunc(ctx, func() { conn.Close() })
	algos := o.HostKeyAlgorithms
	if len(algos) == 0 {
		algos = defaultHostKeyAlgorithms()
	}
	cfg := &ssh.ClientConfig{
		User:              o.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(o.Key.Signer)},
		HostKeyCallback:   o.HostKey,
		HostKeyAlgorithms: algos,
	}
	sc, chans, reqs, err := ssh.NewClientConn(conn, o.Addr, cfg)
	if !stopClose() || err != nil {
		conn.Close()
		if err == nil {
			err = ctx.Err()
		} else if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return nil, classify(o.Addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	c := &Client{ssh: ssh.NewClient(sc, chans, reqs), stop: make(chan struct{})}
	ka := o.KeepAlive
	if ka == 0 {
		ka = DefaultKeepAlive
	}
	if ka > 0 {
		c.wg.Add(1)
		go c.keepAlive(ka)
	}
	return c, nil
}

func classify(addr string, err error) error {
	if errors.Is(err, ErrHostKeyMismatch) {
		var m *HostKeyMismatchError
		errors.As(err, &m)
		return m // already one clear line
	}
	stage := StageHandshake
	if strings.Contains(err.Error(), "unable to authenticate") {
		stage = StageAuth
	}
	return &DialError{Addr: addr, Stage: stage, Err: err}
}

// keepAlive sends keepalive@openssh.com every interval and closes the
// connection when the guest stops answering for three intervals.
func (c *Client) keepAlive(interval time.Duration) {
	defer c.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		res := make(chan error, 1)
		go func() {
			_, _, err := c.ssh.SendRequest("keepalive@openssh.com", true, nil)
			res <- err
		}()
		dead := time.NewTimer(3 * interval)
		select {
		case err := <-res:
			dead.Stop()
			if err != nil {
				return
			}
		case <-dead.C:
			c.ssh.Close()
			return
		case <-c.stop:
			dead.Stop()
			return
		}
	}
}

// Overlapping attempts in WaitReady: behind QEMU's user-mode forward a
// connection made before the guest's network is up is accepted and then
// hangs (slirp retries its SYN to the guest with back-off), so WaitReady
// starts another attempt when the youngest has been pending for
// stallAfter, keeping at most maxAttempts and abandoning the oldest.
const (
	stallAfter  = time.Second
	maxAttempts = 6
)

// WaitReady dials the guest every poll interval (TCP connect, SSH handshake
// and authentication) until an attempt succeeds or ctx ends; onTick, if not
// nil, is called after each failed attempt. An attempt that hangs does not
// hold up the polling: a new one is started beside it. On timeout the error
// names the stage and cause of the last failure. A host key mismatch ends
// the wait at once.
func WaitReady(ctx context.Context, o Options, poll time.Duration, onTick func()) (*Client, error) {
	if poll <= 0 {
		poll = 150 * time.Millisecond
	}
	type attempt struct {
		id     int
		start  time.Time
		cancel context.CancelFunc
	}
	type result struct {
		id  int
		c   *Client
		err error
	}
	start := time.Now()
	results := make(chan result)
	var pending []attempt
	nextID := 0
	launch := func() {
		actx, cancel := context.WithCancel(ctx)
		a := attempt{id: nextID, start: time.Now(), cancel: cancel}
		nextID++
		pending = append(pending, a)
		go func() {
			c, err := Dial(actx, o)
			results <- result{a.id, c, err}
		}()
	}
	abandoned := map[int]bool{}
	// finish cancels and collects every pending attempt, closing late successes.
	finish := func() {
		for _, a := range pending {
			a.cancel()
		}
		for len(pending) > 0 {
			r := <-results
			pending = slices.DeleteFunc(pending, func(a attempt) bool { return a.id == r.id })
			if r.c != nil {
				r.c.Close()
			}
		}
	}
	var last error
	t := time.NewTicker(poll)
	defer t.Stop()
	launch()
	for {
		select {
		case r := <-results:
			var cancel context.CancelFunc
			pending = slices.DeleteFunc(pending, func(a attempt) bool {
				if a.id == r.id {
					cancel = a.cancel
				}
				return a.id == r.id
			})
			if r.err == nil {
				finish()
				// the winner's ctx must outlive WaitReady: Dial only uses it
				// until the handshake is done, so cancelling it now is safe.
				cancel()
				return r.c, nil
			}
			cancel()
			if errors.Is(r.err, ErrHostKeyMismatch) {
				finish()
				return nil, r.err
			}
			if !abandoned[r.id] && (last == nil || !expired(ctx)) {
				last = r.err // an attempt cut short by ctx says less than the previous one
			}
			delete(abandoned, r.id)
			if onTick != nil {
				onTick()
			}
		case <-t.C:
			if len(pending) > 0 && time.Since(pending[len(pending)-1].start) < stallAfter {
				break
			}
			if len(pending) >= maxAttempts {
				abandoned[pending[0].id] = true
				pending[0].cancel()
			}
			launch()
		case <-ctx.Done():
			// Let the pending attempts report why they did not finish.
			for len(pending) > 0 {
				r := <-results
				pending = slices.DeleteFunc(pending, func(a attempt) bool { return a.id == r.id })
				if r.c != nil {
					r.c.Close()
				}
				if last == nil {
					last = r.err
				}
			}
			if last == nil {
				last = ctx.Err()
			}
			return nil, fmt.Errorf("guest at %s not ready over SSH after %s; last error: %v", o.Addr, time.Since(start).Round(time.Second/10), last)
		}
	}
}

// expired reports whether ctx is done or its deadline has passed (the
// network stack may see the deadline before ctx's own timer fires).
func expired(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// Run runs cmd (a shell command line, see Quote) without a PTY, with stdin
// copied to the remote (remote stdin is closed at EOF; nil means empty) and
// the remote stdout and stderr copied to stdout and stderr (nil discards).
// It returns the remote exit status (128+N for a signal N). Cancelling ctx
// signals the remote command (TERM) and closes the session.
func (c *Client) Run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	s, err := c.ssh.NewSession()
	if err != nil {
		return -1, fmt.Errorf("ssh session: %w", err)
	}
	defer s.Close()
	s.Stdin, s.Stdout, s.Stderr = stdin, stdout, stderr
	return wait(ctx, s, func() error { return s.Start(cmd) })
}

// wait starts the session and waits for its exit status, ending it when
// ctx is cancelled.
func wait(ctx context.Context, s *ssh.Session, start func() error) (int, error) {
	if err := start(); err != nil {
		return -1, fmt.Errorf("ssh start command: %w", err)
	}
	stop := context.AfterFunc(ctx, func() {
		_ = s.Signal(ssh.SIGTERM)
		s.Close()
	})
	defer stop()
	err := s.Wait()
	if ctx.Err() != nil {
		return -1, fmt.Errorf("remote command: %w", ctx.Err())
	}
	var exit *ssh.ExitError
	var missing *ssh.ExitMissingError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &exit):
		return exit.ExitStatus(), nil
	case errors.As(err, &missing):
		return -1, errors.New("remote command ended without an exit status (connection to the guest lost?)")
	default:
		return -1, fmt.Errorf("remote command: %w", err)
	}
}
