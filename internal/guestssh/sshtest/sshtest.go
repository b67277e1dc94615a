// Package sshtest is an in-process SSH server on 127.0.0.1 for tests. It
// stands in for the guest's sshd: it checks keys per user, runs what clients
// ask with a Handler (by default the host's /bin/sh), records what ran, and
// can hang the way QEMU's user-mode forward does before the guest's network
// is up, so that code driving the guest is tested over real SSH.
package sshtest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
)

// Options configure a Server.
type Options struct {
	// Addr is where to listen; "" means a free port on 127.0.0.1.
	Addr string
	// HostKey is the server's host key; nil means a fresh ed25519 key.
	HostKey ssh.Signer
	// Authorized lists, per user, the keys allowed to log in; a user not
	// listed is refused. Authorize adds more later.
	Authorized map[string][]ssh.PublicKey
	// Handler runs each session's command; nil means ExecHandler in a
	// temporary folder.
	Handler Handler
	// Hang makes the server accept TCP connections and never answer them,
	// as QEMU's user-mode forward does before the guest's network is up.
	// SetHang changes it for connections accepted later.
	Hang bool
}

// Handler runs one session's command and returns its exit status. It must
// return once s.Context() is done.
type Handler func(s *Session) int

// Window is a terminal size.
type Window struct{ Cols, Rows int }

// Session is one command (or login shell) a client asked for.
type Session struct {
	// User is the user the client logged in as.
	User string
	// Command is the exec request's command line; "" for a login shell.
	Command string
	// PTY says whether the client asked for a terminal; Term and Window
	// are what it asked for.
	PTY    bool
	Term   string
	Window Window
	// Resized delivers the client's window changes.
	Resized <-chan Window
	// Signals delivers the names of the signals the client sent ("TERM").
	Signals <-chan string
	// Stdin, Stdout and Stderr are the session's streams.
	Stdin          io.Reader
	Stdout, Stderr io.Writer

	ctx context.Context
}

// Context is done when the client closes the session or the server closes.
func (s *Session) Context() context.Context { return s.ctx }

// Record is a command that ran, as whom.
type Record struct {
	// User is the user the session was logged in as.
	User string
	// Command is the command line; "" for a login shell.
	Command string
}

// Server is an in-process SSH server on 127.0.0.1 for tests.
type Server struct {
	ln      net.Listener
	handler Handler
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	once    sync.Once

	mu         sync.Mutex
	hostKey    ssh.Signer
	authorized map[string][]ssh.PublicKey
	hang       bool
	conns      []net.Conn
	records    []Record
	accepted   int
	keepAlives int
}

// NewSigner returns a fresh ed25519 key, for host keys and client keys.
func NewSigner(t testing.TB) ssh.Signer {
	t.Helper()
	_, pk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(pk)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// NewServer starts a server; it is closed on t.Cleanup.
func NewServer(t testing.TB, o Options) *Server {
	t.Helper()
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.HostKey == nil {
		o.HostKey = NewSigner(t)
	}
	if o.Handler == nil {
		o.Handler = ExecHandler(t.TempDir())
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		ln: ln, handler: o.Handler, ctx: ctx, cancel: cancel,
		hostKey: o.HostKey, authorized: map[string][]ssh.PublicKey{}, hang: o.Hang,
	}
	for user, keys := range o.Authorized {
		s.Authorize(user, keys...)
	}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.Close)
	return s
}

// Addr is the host:port the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Port is the port the server listens on.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// HostKey is the host key that new connections see.
func (s *Server) HostKey() ssh.PublicKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hostKey.PublicKey()
}

// SetHostKey makes new connections see another host key, as a rebuilt
// guest (or someone else on the port) would.
func (s *Server) SetHostKey(k ssh.Signer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hostKey = k
}

// SetHang says whether connections accepted from now on are held silent.
// Connections already held stay silent: slirp's SYN retries can keep them
// waiting long after a new connection would be answered.
func (s *Server) SetHang(hang bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hang = hang
}

// Authorize lets keys log in as user.
func (s *Server) Authorize(user string, keys ...ssh.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authorized[user] = append(s.authorized[user], keys...)
}

// Commands returns what ran so far, in the order the requests arrived.
func (s *Server) Commands() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.records)
}

// Accepted is how many TCP connections the server accepted, answered or held.
func (s *Server) Accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// KeepAlives is how many keepalive@openssh.com requests clients sent.
func (s *Server) KeepAlives() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keepAlives
}

// Close stops the server, drops every connection and ends every session,
// as a guest that powers off would. It waits for the handlers to return.
func (s *Server) Close() {
	s.once.Do(func() {
		s.cancel()
		s.ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
}

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.accepted++
		s.conns = append(s.conns, c)
		hang, hk := s.hang, s.hostKey
		s.mu.Unlock()
		if s.ctx.Err() != nil {
			c.Close() // Close ran between Accept and the lock
			continue
		}
		if hang {
			continue // held open and silent until Close
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handleConn(c, hk)
		}()
	}
}

func (s *Server) allowed(user string, key ssh.PublicKey) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.ContainsFunc(s.authorized[user], func(k ssh.PublicKey) bool {
		return bytes.Equal(k.Marshal(), key.Marshal())
	})
}

func (s *Server) handleConn(c net.Conn, hk ssh.Signer) {
	defer c.Close()
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(m ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if s.allowed(m.User(), key) {
				return nil, nil
			}
			return nil, errors.New("key not authorized for this user")
		},
	}
	cfg.AddHostKey(hk)
	conn, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	go func() {
		for r := range reqs {
			if r.Type == "keepalive@openssh.com" {
				s.mu.Lock()
				s.keepAlives++
				s.mu.Unlock()
			}
			if r.WantReply {
				_ = r.Reply(false, nil) // as OpenSSH answers keepalives
			}
		}
	}()
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.session(conn.User(), ch, creqs)
		}()
	}
}

// session serves one channel's requests and runs the handler on the first
// exec or shell request; it ends when the handler returns (sending its exit
// status) or the client closes the channel (ending the handler).
func (s *Server) session(user string, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	resized := make(chan Window, 64)
	signals := make(chan string, 64)
	sess := &Session{User: user, Resized: resized, Signals: signals, Stdin: ch, Stdout: ch, Stderr: ch.Stderr(), ctx: ctx}
	var exited chan int // nil until the handler runs
	for {
		select {
		case status := <-exited:
			_ = ch.CloseWrite()
			_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(status)}))
			go ssh.DiscardRequests(reqs) // until the client's close arrives
			return
		case r, ok := <-reqs:
			if !ok { // the client closed the channel
				cancel()
				if exited != nil {
					<-exited
				}
				return
			}
			reply := false
			switch r.Type {
			case "pty-req":
				var p struct {
					Term             string
					Cols, Rows, W, H uint32
					Modes            string
				}
				if exited == nil && ssh.Unmarshal(r.Payload, &p) == nil {
					sess.PTY, sess.Term, sess.Window = true, p.Term, Window{int(p.Cols), int(p.Rows)}
					reply = true
				}
			case "window-change":
				var w struct{ Cols, Rows, W, H uint32 }
				if ssh.Unmarshal(r.Payload, &w) == nil {
					offer(resized, Window{int(w.Cols), int(w.Rows)})
					reply = true
				}
			case "signal":
				var sig struct{ Signal string }
				if ssh.Unmarshal(r.Payload, &sig) == nil {
					offer(signals, sig.Signal)
					reply = true
				}
			case "exec", "shell":
				var e struct{ Command string }
				if exited != nil || (r.Type == "exec" && ssh.Unmarshal(r.Payload, &e) != nil) {
					break
				}
				sess.Command = e.Command
				s.mu.Lock()
				s.records = append(s.records, Record{User: user, Command: e.Command})
				s.mu.Unlock()
				exited = make(chan int, 1)
				go func() { exited <- s.handler(sess) }()
				reply = true
			}
			if r.WantReply {
				_ = r.Reply(reply, nil)
			}
		}
	}
}

// offer sends v unless the handler has left a full buffer unread: the
// server must keep serving requests either way.
func offer[T any](ch chan<- T, v T) {
	select {
	case ch <- v:
	default:
	}
}
