package guestssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Defaults for Options.
const (
	DefaultTimeout   = 20 * time.Second
	DefaultKeepAlive = 30 * time.Second
	DefaultAuthGrace = 10 * time.Second
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
	// AuthGrace is how long WaitReady lets the guest's sshd refuse the key
	// before it gives up with an *AuthRefusedError; 0 means DefaultAuthGrace.
	// The first refusals can be a race with the guest still writing its keys.
	AuthGrace time.Duration
}

func (o Options) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return DefaultTimeout
}

func (o Options) authGrace() time.Duration {
	if o.AuthGrace > 0 {
		return o.AuthGrace
	}
	return DefaultAuthGrace
}

// validate catches the programming errors that no retry can fix.
func (o Options) validate() error {
	if o.HostKey == nil {
		return errors.New("ssh: no host key callback: use KnownHosts.Callback")
	}
	if o.Key.Signer == nil {
		return errors.New("ssh: no key: use EnsureKey")
	}
	return nil
}

// Runner runs commands in the guest. *Client implements it; workspace tests fake it.
type Runner interface {
	// Run runs cmd without a PTY and returns its exit status (see Client.Run).
	Run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error)
	// Shell runs cmd, or a login shell, on a PTY (see Client.Shell).
	Shell(ctx context.Context, cmd string, in, out *os.File, term string) (int, error)
	// Close ends the connection.
	Close() error
}

var _ Runner = (*Client)(nil)

// Client is a connection to the guest. Close it when done.
type Client struct {
	ssh  *ssh.Client
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

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

// Stages of a connection attempt, in the order SSH meets them: the host
// key is checked during key exchange, before the client offers its key.
const (
	StageConnect   Stage = "tcp connect"
	StageHandshake Stage = "ssh handshake"
	StageHostKey   Stage = "host key"
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
	return fmt.Sprintf("ssh to %s: %s", e.Addr, e.cause())
}

// cause is the stage and its cause without the address, which the net
// package repeats ("dial tcp 127.0.0.1:5022: connect: connection refused").
func (e *DialError) cause() string {
	err := e.Err
	if op, ok := err.(*net.OpError); ok {
		err = op.Err
	}
	return fmt.Sprintf("%s: %v", e.Stage, err)
}

// Unwrap returns the cause.
func (e *DialError) Unwrap() error { return e.Err }

// Dial connects and authenticates to the guest, and starts keepalives.
// A host key mismatch is a *HostKeyMismatchError; other failures are a
// *DialError.
func Dial(ctx context.Context, o Options) (*Client, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout())
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", o.Addr)
	if err != nil {
		return nil, &DialError{Addr: o.Addr, Stage: StageConnect, Err: err}
	}
	return login(ctx, conn, o)
}

// login runs SSH on conn, within o.Timeout or until ctx ends: key
// exchange with the host key check, then authentication. It closes conn
// unless it returns a Client.
func login(ctx context.Context, conn net.Conn, o Options) (*Client, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout())
	defer cancel()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stopClose := context.AfterFunc(ctx, func() { conn.Close() })
	algos := o.HostKeyAlgorithms
	if len(algos) == 0 {
		algos = defaultHostKeyAlgorithms()
	}
	cfg := &ssh.ClientConfig{
		User: o.User,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(o.Key.Signer)},
		HostKeyCallback: func(host string, remote net.Addr, key ssh.PublicKey) error {
			if err := o.HostKey(host, remote, key); err != nil {
				return &hostKeyError{err}
			}
			return nil
		},
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

// hostKeyError marks what the host key callback refused, so that classify
// tells it from the handshake failures that a retry may fix.
type hostKeyError struct{ err error }

func (e *hostKeyError) Error() string { return e.err.Error() }
func (e *hostKeyError) Unwrap() error { return e.err }

func classify(addr string, err error) error {
	var m *HostKeyMismatchError
	if errors.As(err, &m) {
		return m // already one clear line
	}
	var hk *hostKeyError
	switch {
	case errors.As(err, &hk):
		return &DialError{Addr: addr, Stage: StageHostKey, Err: hk.err}
	case strings.Contains(err.Error(), "unable to authenticate"): // x/crypto/ssh has no error type for it
		return &DialError{Addr: addr, Stage: StageAuth, Err: err}
	default:
		return &DialError{Addr: addr, Stage: StageHandshake, Err: err}
	}
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
