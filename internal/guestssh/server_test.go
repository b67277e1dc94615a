package guestssh

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/crypto/ssh"
)

// ptyReq is what the test server saw in a pty-req.
type ptyReq struct {
	Term       string
	Cols, Rows uint32
}

// testServer is an in-process SSH server on 127.0.0.1 that runs exec
// requests with the host's real /bin/sh -c, and records PTY requests, window
// changes, signals and keepalives.
type testServer struct {
	t          *testing.T
	ln         net.Listener
	Addr       string
	authorized ssh.PublicKey

	mu      sync.Mutex
	hostKey ssh.Signer
	conns   []net.Conn

	keepalives atomic.Int32
	execs      chan string
	ptys       chan ptyReq
	winches    chan [2]uint32
	signals    chan string
	ctx        context.Context
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

func newHostKey(t *testing.T) ssh.Signer {
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

// startServer serves on addr ("127.0.0.1:0" for a free port) and accepts
// only the authorized key.
func startServer(t *testing.T, addr string, authorized ssh.PublicKey) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &testServer{
		t: t, ln: ln, Addr: ln.Addr().String(), authorized: authorized, hostKey: newHostKey(t),
		execs: make(chan string, 100), ptys: make(chan ptyReq, 100), winches: make(chan [2]uint32, 100),
		signals: make(chan string, 100), ctx: ctx, cancel: cancel,
	}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.Close)
	return s
}

// Close stops the server and every connection and process it has.
func (s *testServer) Close() {
	s.cancel()
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *testServer) HostKey() ssh.PublicKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hostKey.PublicKey()
}

// SetHostKey makes new connections see another host key.
func (s *testServer) SetHostKey(k ssh.Signer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hostKey = k
}

func (s *testServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.serveConn(c)
	}
}

// serveConn runs the SSH server on a connection accepted elsewhere.
func (s *testServer) serveConn(c net.Conn) {
	s.mu.Lock()
	s.conns = append(s.conns, c)
	hk := s.hostKey
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.handleConn(c, hk)
	}()
}

func (s *testServer) handleConn(c net.Conn, hk ssh.Signer) {
	defer c.Close()
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(key.Marshal(), s.authorized.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("unknown key")
		},
	}
	cfg.AddHostKey(hk)
	_, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	go func() {
		for r := range reqs {
			if r.Type == "keepalive@openssh.com" {
				s.keepalives.Add(1)
			}
			if r.WantReply {
				_ = r.Reply(false, nil)
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
			s.session(ch, creqs)
		}()
	}
}

func (s *testServer) session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	var cmd *exec.Cmd
	exited := make(chan error, 1)
	for {
		var r *ssh.Request
		select {
		case r = <-reqs:
		case err := <-exited:
			s.sendExit(ch, cmd, err)
			return
		}
		if r == nil { // client closed the channel
			return
		}
		ok := false
		switch r.Type {
		case "pty-req":
			var p struct {
				Term             string
				Cols, Rows, W, H uint32
				Modes            string
			}
			if ssh.Unmarshal(r.Payload, &p) == nil {
				s.ptys <- ptyReq{Term: p.Term, Cols: p.Cols, Rows: p.Rows}
				ok = true
			}
		case "window-change":
			var w struct{ Cols, Rows, W, H uint32 }
			if ssh.Unmarshal(r.Payload, &w) == nil {
				s.winches <- [2]uint32{w.Cols, w.Rows}
				ok = true
			}
		case "signal":
			var sig struct{ Signal string }
			if ssh.Unmarshal(r.Payload, &sig) == nil && cmd != nil {
				s.signals <- sig.Signal
				_ = cmd.Process.Signal(syscall.SIGTERM)
				ok = true
			}
		case "exec", "shell":
			line := "exec /bin/sh"
			if r.Type == "exec" {
				var e struct{ Command string }
				if ssh.Unmarshal(r.Payload, &e) != nil || cmd != nil {
					break
				}
				line = e.Command
			}
			cmd = exec.CommandContext(ctx, "/bin/sh", "-c", line)
			cmd.Stdout, cmd.Stderr = ch, ch.Stderr()
			stdin, err := cmd.StdinPipe()
			if err != nil || cmd.Start() != nil {
				break
			}
			go func() {
				_, _ = io.Copy(stdin, ch)
				stdin.Close()
			}()
			go func() { exited <- cmd.Wait() }()
			s.execs <- line
			ok = true
		}
		if r.WantReply {
			_ = r.Reply(ok, nil)
		}
	}
}

func (s *testServer) sendExit(ch ssh.Channel, cmd *exec.Cmd, err error) {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			_, _ = ch.SendRequest("exit-signal", false, ssh.Marshal(struct {
				Signal     string
				CoreDumped bool
				Error      string
				Lang       string
			}{Signal: "TERM"}))
			return
		}
	}
	_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(cmd.ProcessState.ExitCode())}))
}

// newPipe returns an in-memory pipe for a session's stdin.
func newPipe() (*io.PipeReader, *io.PipeWriter) { return io.Pipe() }
