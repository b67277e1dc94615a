package qemuvm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// PortInUseError says the SSH port cannot be bound on 127.0.0.1.
type PortInUseError struct {
	Port int
}

// Error tells the user what to do about it.
func (e *PortInUseError) Error() string {
	return fmt.Sprintf("SSH port %d on 127.0.0.1 is in use: set ARMDEV_SSH_PORT to a free port", e.Port)
}

// PortFree checks that port can be bound on 127.0.0.1, where QEMU forwards SSH. It
// returns a *PortInUseError when something else holds the port.
func PortFree(port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return &PortInUseError{Port: port}
		}
		return fmt.Errorf("check SSH port %d: %w", port, err)
	}
	return l.Close()
}

// Process is a QEMU that Start ran.
type Process struct {
	PID     int    // QEMU's pid; 0 when it did not start
	Cmdline string // its command line, quoted to be pasted into a shell (CmdlineQuoted)
}

// logHeader starts QEMU's log, before the command line and QEMU's own output.
const logHeader = "# qemu command line (paste to reproduce):\n"

// Start runs QEMU for spec in the background and returns it once the guest is up
// far enough to be managed: the pid file names it and the QMP socket answers.
//
// QEMU runs in its own session (detached from the terminal, so closing the terminal
// or Ctrl-C does not stop it), with stdin from /dev/null and stdout and stderr going
// to logFile, which is truncated and then starts with the command line (logHeader),
// so that a failed boot can be reproduced by hand. Relative paths in spec are made
// absolute; socket paths go through SocketPath.
//
// Start refuses to run a second guest on the same disk, and a guest whose pid file
// another live process holds. The pid file itself is left to QEMU, whose lock on it
// is what keeps two QEMUs apart. If QEMU exits before it is ready, the error carries
// its last message, turned into a clear instruction for the usual causes (SSH port
// taken, disk or pid file used by another QEMU). If ctx ends first, QEMU is killed.
// Without a deadline on ctx, Start waits at most a minute. Once QEMU has been run,
// the returned Process carries its command line even when Start fails.
func Start(ctx context.Context, spec Spec, accel, cpu, logFile string) (Process, error) {
	if err := spec.Validate(); err != nil {
		return Process{}, err
	}
	spec, err := resolvePaths(spec)
	if err != nil {
		return Process{}, err
	}
	st, err := Inspect(spec.PIDFile, spec.Disk, spec.Name)
	if err != nil {
		return Process{}, err
	}
	if st.Running {
		return Process{}, fmt.Errorf("the guest is already running (pid %d)", st.PID)
	}
	if st.Holder > 0 {
		return Process{}, pidFileHeldError(spec.PIDFile, st.Holder)
	}
	if spec.SSHPort > 0 {
		if err := PortFree(spec.SSHPort); err != nil {
			return Process{}, err
		}
	}
	return launch(ctx, spec, accel, cpu, logFile)
}

// pidFileHeldError says that a process other than our guest holds the pid file.
func pidFileHeldError(pidFile string, holder int) error {
	who := "another QEMU"
	if holder > 0 {
		who += fmt.Sprintf(" (pid %d)", holder)
	}
	return fmt.Errorf("%s holds this workspace's pid file %s: stop that guest first", who, pidFile)
}

// resolvePaths makes spec's file paths absolute and its socket paths short enough.
func resolvePaths(spec Spec) (Spec, error) {
	for _, p := range []*string{&spec.UBoot, &spec.Disk, &spec.ShareDir, &spec.NixConfigDir, &spec.PIDFile, &spec.SerialLog} {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return spec, fmt.Errorf("make %s absolute: %w", *p, err)
		}
		*p = abs
	}
	for _, p := range []*string{&spec.QMPSocket, &spec.SerialSocket} {
		s, err := SocketPath(*p)
		if err != nil {
			return spec, err
		}
		*p = s
	}
	return spec, nil
}

// launch starts QEMU and waits until it is ready; see Start.
func launch(ctx context.Context, spec Spec, accel, cpu, logFile string) (Process, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Minute)
		defer cancel()
	}
	args := Args(spec, accel, cpu)
	p := Process{Cmdline: CmdlineQuoted(spec.QEMU, args)}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return p, err
	}
	defer devnull.Close()
	logf, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return p, err
	}
	defer logf.Close()
	header := logHeader + p.Cmdline + "\n"
	if _, err := logf.WriteString(header); err != nil {
		return p, err
	}

	cmd := exec.Command(spec.QEMU, args...)
	cmd.Stdin = devnull
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return p, fmt.Errorf("run %s: %w", spec.QEMU, err)
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	// Reaps QEMU if it exits while this process still runs; once this process ends,
	// QEMU (in its own session) is adopted by init.
	go func() { exited <- cmd.Wait() }()

	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			return p, exitError(spec, logFile, int64(len(header)), err)
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			return p, fmt.Errorf("QEMU did not become ready: %w (see %s)", ctx.Err(), logFile)
		case <-tick.C:
		}
		// The pid file may still name an earlier QEMU: QEMU rewrites it once it
		// holds its lock.
		if b, err := os.ReadFile(spec.PIDFile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(pid) {
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		q, err := DialQMP(dctx, spec.QMPSocket)
		cancel()
		if err != nil {
			continue
		}
		q.Close()
		p.PID = pid
		return p, nil
	}
}

// exitError explains why QEMU exited during start, from what it wrote to logFile
// after the first skip bytes (the header holding its command line).
func exitError(spec Spec, logFile string, skip int64, waitErr error) error {
	lines, _ := tailLines(logFile, skip, 5)
	msg := strings.Join(lines, " | ")
	switch {
	case strings.Contains(msg, "Could not set up host forwarding rule"):
		return &PortInUseError{Port: spec.SSHPort}
	case strings.Contains(msg, `Failed to get "write" lock`):
		return fmt.Errorf("the disk %s is in use by another QEMU: stop that guest first", spec.Disk)
	case strings.Contains(msg, "Cannot lock pid file"):
		holder, _, _ := PIDFileHolder(spec.PIDFile)
		return pidFileHeldError(spec.PIDFile, holder)
	case msg == "":
		return fmt.Errorf("QEMU exited (%v) without a message", waitErr)
	}
	return fmt.Errorf("QEMU exited: %s", strings.TrimPrefix(msg, filepath.Base(spec.QEMU)+": "))
}
