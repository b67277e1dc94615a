package guestssh

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/crypto/ssh"
	"golang.org/x/term"
)

// Shell runs an interactive session on a PTY: the remote login shell if cmd
// is empty, else cmd. TERM is sent as termName ("xterm-256color" if empty)
// with the window size of in (or out, else 80x24); in is put in raw mode
// while the session runs and always restored; SIGWINCH sends the new size.
// It returns the remote exit status.
func (c *Client) Shell(ctx context.Context, cmd string, in, out *os.File, termName string) (int, error) {
	if term.IsTerminal(int(in.Fd())) {
		state, err := term.MakeRaw(int(in.Fd()))
		if err != nil {
			return -1, fmt.Errorf("terminal raw mode: %w", err)
		}
		defer func() { _ = term.Restore(int(in.Fd()), state) }()
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)
	return c.pty(ctx, cmd, in, out, out, termName, func() (int, int, error) { return windowSize(in, out) }, winch)
}

// windowSize returns the columns and rows of the first terminal among files.
func windowSize(files ...*os.File) (int, int, error) {
	err := fmt.Errorf("not a terminal")
	for _, f := range files {
		var w, h int
		if w, h, err = term.GetSize(int(f.Fd())); err == nil {
			return w, h, nil
		}
	}
	return 0, 0, err
}

// pty runs cmd (or the login shell) on a PTY of the size given by size
// (80x24 if it fails), sending a window change after each value on resize.
func (c *Client) pty(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer, termName string, size func() (cols, rows int, err error), resize <-chan os.Signal) (int, error) {
	s, err := c.ssh.NewSession()
	if err != nil {
		return -1, fmt.Errorf("ssh session: %w", err)
	}
	defer s.Close()
	if termName == "" {
		termName = "xterm-256color"
	}
	getSize := func() (int, int) {
		w, h, err := size()
		if err != nil || w <= 0 || h <= 0 {
			return 80, 24
		}
		return w, h
	}
	w, h := getSize()
	modes := ssh.TerminalModes{ssh.ECHO: 1, ssh.TTY_OP_ISPEED: 38400, ssh.TTY_OP_OSPEED: 38400}
	if err := s.RequestPty(termName, h, w, modes); err != nil {
		return -1, fmt.Errorf("ssh request pty: %w", err)
	}
	s.Stdin, s.Stdout, s.Stderr = stdin, stdout, stderr

	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-done:
				return
			case <-resize:
				if nw, nh := getSize(); nw != w || nh != h {
					w, h = nw, nh
					_ = s.WindowChange(h, w)
				}
			}
		}
	}()
	return wait(ctx, s, func() error {
		if cmd == "" {
			return s.Shell()
		}
		return s.Start(cmd)
	})
}
