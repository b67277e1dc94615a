package sshtest

import (
	"errors"
	"fmt"
	"io"
	"os/exec"
	"syscall"
	"time"
)

// signals maps SSH signal names (RFC 4254 §6.10) to the host's.
var signals = map[string]syscall.Signal{
	"HUP": syscall.SIGHUP, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT,
	"KILL": syscall.SIGKILL, "TERM": syscall.SIGTERM, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2,
}

// ExecHandler runs each command with the host's `/bin/sh -c` in dir (a login
// shell is `/bin/sh` reading stdin), without a real terminal even when the
// client asked for one. Signals from the client reach the process; a
// process killed by signal N exits with 128+N, as a shell reports it.
func ExecHandler(dir string) Handler {
	return func(s *Session) int {
		line := s.Command
		if line == "" {
			line = "exec /bin/sh"
		}
		cmd := exec.CommandContext(s.Context(), "/bin/sh", "-c", line)
		cmd.Dir = dir
		cmd.Stdout, cmd.Stderr = s.Stdout, s.Stderr
		// A background child holding the output must not keep the session open forever.
		cmd.WaitDelay = time.Second
		// A pipe of our own, so that Wait does not wait for the client's stdin
		// to end: a shell on a terminal exits while its stdin stays open.
		stdin, err := cmd.StdinPipe()
		if err == nil {
			err = cmd.Start()
		}
		if err != nil {
			fmt.Fprintln(s.Stderr, "sshtest:", err)
			return 127
		}
		go func() {
			_, _ = io.Copy(stdin, s.Stdin)
			stdin.Close()
		}()
		done := make(chan struct{})
		go func() {
			for {
				select {
				case name := <-s.Signals:
					if sig, ok := signals[name]; ok {
						_ = cmd.Process.Signal(sig)
					}
				case <-done:
					return
				}
			}
		}()
		err = cmd.Wait()
		close(done)
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				return 128 + int(ws.Signal())
			}
		}
		return cmd.ProcessState.ExitCode()
	}
}
