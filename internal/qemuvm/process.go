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

// Start runs QEMU for spec in the background and returns its pid once the guest is
// up far enough to be managed: the pid file names it and the QMP socket answers.
//
// QEMU runs in its own session (detached from the terminal, so closing the terminal
// or Ctrl-C does not stop it), with stdin from /dev/null and stdout and stderr going
// to stderrLog (truncated first). Relative paths in spec are made absolute; socket
// paths go through SocketPath. Start refuses to run a second guest on the same pid
// file and disk. If QEMU exits before it is ready, the error carries its last
// message, turned into a clear instruction for the usual causes (SSH port taken,
// disk used by another QEMU). If ctx ends first, QEMU is killed. Without a deadline
// on ctx, Start waits at most a minute.
func Start(ctx context.Context, spec Spec, accel, cpu, stderrLog string) (int, error) {
	if err := spec.Validate(); err != nil {
		return 0, fmt.Errorf("start guest: %w", err)
	}
	spec, err := resolvePaths(spec)
	if err != nil {
		return 0, fmt.Errorf("start guest: %w", err)
	}
	st, err := Running(spec.PIDFile, spec.Disk, spec.Name)
	if err != nil {
		return 0, fmt.Errorf("start guest: %w", err)
	}
	if st.Running {
		return 0, fmt.Errorf("start guest: the guest is already running (pid %d)", st.PID)
	}
	if spec.SSHPort > 0 {
		if err := PortFree(spec.SSHPort); err != nil {
			return 0, err
		}
	}
	return launch(ctx, spec, accel, cpu, stderrLog)
}

// resolvePaths makes spec's file paths absolute and its socket paths short enough.
func resolvePaths(spec Spec) (Spec, error) {
	for _, p := range []*string{&spec.UBoot, &spec.Disk, &spec.ShareDir, &spec.NixConfigDir, &spec.PIDFile, &spec.SerialLog} {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return spec, err
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
func launch(ctx context.Context, spec Spec, accel, cpu, stderrLog string) (int, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Minute)
		defer cancel()
	}
	if err := os.Remove(spec.PIDFile); err != nil && !os.IsNotExist(err) {
		return 0, fmt.Errorf("start guest: remove old pid file: %w", err)
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, fmt.Errorf("start guest: %w", err)
	}
	defer devnull.Close()
	logf, err := os.OpenFile(stderrLog, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return 0, fmt.Errorf("start guest: QEMU log: %w", err)
	}
	defer logf.Close()

	cmd := exec.Command(spec.QEMU, Args(spec, accel, cpu)...)
	cmd.Stdin = devnull
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start guest: run %s: %w", spec.QEMU, err)
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
			return 0, exitError(spec, stderrLog, err)
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			return 0, fmt.Errorf("start guest: QEMU did not become ready: %w (see %s)", ctx.Err(), stderrLog)
		case <-tick.C:
		}
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
		return pid, nil
	}
}

// exitError explains why QEMU exited during start, from the end of its log.
func exitError(spec Spec, stderrLog string, waitErr error) error {
	lines, _ := TailLines(stderrLog, 5)
	msg := strings.Join(lines, " | ")
	switch {
	case strings.Contains(msg, "Could not set up host forwarding rule"):
		return &PortInUseError{Port: spec.SSHPort}
	case strings.Contains(msg, `Failed to get "write" lock`):
		return fmt.Errorf("start guest: the disk %s is in use by another QEMU: stop that guest first", spec.Disk)
	case msg == "":
		return fmt.Errorf("start guest: QEMU exited (%v) without a message", waitErr)
	}
	return fmt.Errorf("start guest: QEMU exited: %s", strings.TrimPrefix(msg, filepath.Base(spec.QEMU)+": "))
}

// State is what a pid file says about the guest.
type State struct {
	PID     int    // the pid in the pid file; 0 when there is none
	Running bool   // PID is our guest: its process name and disk match
	Stale   bool   // the pid file did not name our guest and has been removed
	Reason  string // why the pid file was stale
}

// Running reads pidFile and checks that the process it names is the guest running
// disk: its process name (/proc/PID/comm) must be name ("" means DefaultName) and
// its command line must use disk. A pid file naming no process, or a process that is
// not this guest, is stale: it is removed and reported with Stale and Reason. A
// missing pid file is simply "not running".
func Running(pidFile, disk, name string) (State, error) {
	if name == "" {
		name = DefaultName
	}
	b, err := os.ReadFile(pidFile)
	if os.IsNotExist(err) {
		return State{}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("read pid file: %w", err)
	}
	var st State
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		st.Reason = "the pid file holds no pid"
	} else {
		st.PID = pid
		absDisk, err := filepath.Abs(disk)
		if err != nil {
			return st, fmt.Errorf("check guest: %w", err)
		}
		st.Reason = identify(pid, absDisk, name)
	}
	if st.Reason == "" {
		st.Running = true
		return st, nil
	}
	st.Stale = true
	if err := os.Remove(pidFile); err != nil && !os.IsNotExist(err) {
		return st, fmt.Errorf("remove stale pid file: %w", err)
	}
	return st, nil
}

// identify returns "" when pid is the guest named name running disk, else why not.
func identify(pid int, disk, name string) string {
	if !alive(pid) {
		return fmt.Sprintf("no process %d", pid)
	}
	comm, args, err := procInfo(pid)
	if err != nil {
		return fmt.Sprintf("cannot inspect process %d: %v", pid, err)
	}
	if comm != "" && comm != truncComm(name) {
		return fmt.Sprintf("process %d is %q, not the guest", pid, comm)
	}
	if !strings.Contains(args, "process="+escapeOpt(name)) {
		return fmt.Sprintf("process %d is not a QEMU guest named %s", pid, name)
	}
	if !strings.Contains(args, "file="+escapeOpt(disk)+",") {
		return fmt.Sprintf("process %d runs another disk", pid)
	}
	return ""
}

// truncComm shortens name as the kernel does for /proc/PID/comm.
func truncComm(name string) string {
	if len(name) > 15 {
		return name[:15]
	}
	return name
}

// procInfo returns the process name (empty when the OS has no /proc) and the
// command line of pid, its arguments joined by NUL bytes or spaces.
func procInfo(pid int) (comm, args string, err error) {
	dir := "/proc/" + strconv.Itoa(pid)
	if _, err := os.Stat("/proc/self/cmdline"); err != nil {
		// No procfs (macOS): ask ps for the arguments.
		out, err := exec.Command("ps", "-o", "args=", "-p", strconv.Itoa(pid)).Output()
		return "", string(out), err
	}
	c, err := os.ReadFile(dir + "/comm")
	if err != nil {
		return "", "", err
	}
	a, err := os.ReadFile(dir + "/cmdline")
	if err != nil {
		return "", "", err
	}
	return strings.TrimSpace(string(c)), string(a), nil
}

// alive reports whether pid is a process that has not exited (a zombie counts as
// exited once all its threads are gone).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return !os.IsNotExist(err) || !procfs()
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) && (s[i+2] == 'Z' || s[i+2] == 'X') {
		// A zombie leader may still have threads tearing down (and holding its
		// sockets and files); the process is gone once they are.
		tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
		return err == nil && len(tasks) > 1
	}
	return true
}

func procfs() bool {
	_, err := os.Stat("/proc/self/stat")
	return err == nil
}

// WaitExit waits until process pid has exited, polling.
func WaitExit(ctx context.Context, pid int) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for alive(pid) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for process %d to exit: %w", pid, ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}

// Result says what Kill found and did.
type Result struct {
	State       // what the pid file said before (see Running)
	Killed bool // the guest was running and has been killed
}

// Kill stops the guest without asking it: SIGKILL, but only after Running has
// verified that the pid file names the guest running disk. A pid file naming any
// other process is removed and reported in the Result; nothing else is ever
// signalled. Kill waits for the process to exit and removes the pid file.
func Kill(ctx context.Context, pidFile, disk, name string) (Result, error) {
	st, err := Running(pidFile, disk, name)
	if err != nil || !st.Running {
		return Result{State: st}, err
	}
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return Result{State: st}, fmt.Errorf("kill guest (pid %d): %w", st.PID, err)
	}
	if err := WaitExit(ctx, st.PID); err != nil {
		return Result{State: st}, fmt.Errorf("kill guest: %w", err)
	}
	if err := os.Remove(pidFile); err != nil && !os.IsNotExist(err) {
		return Result{State: st, Killed: true}, fmt.Errorf("kill guest: remove pid file: %w", err)
	}
	return Result{State: st, Killed: true}, nil
}
