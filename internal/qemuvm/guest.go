package qemuvm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// State is what armdev knows about the guest of one disk.
type State struct {
	PID     int    // the guest's pid; 0 when none runs
	Running bool   // PID is our guest (name and disk match)
	ByScan  bool   // found by scanning processes, not through the pid file
	Stale   bool   // the pid file exists but does not name our guest (and no live process holds its lock)
	Reason  string // why the pid file does not name our guest; set whenever Stale is
	// Holder is the live process that holds the pid file's lock when that is not
	// our guest (0 otherwise): most likely another QEMU started on this pid file.
	Holder int
}

// Inspect reads pidFile and checks the process it names; when that is not our
// guest it scans for one (FindGuest). It changes nothing on disk.
//
// Our guest is the process named name ("" means DefaultName) whose -drive file is
// disk, compared as files. A pid file whose lock (QEMU's -pidfile takes a POSIX
// lock) is held by a live process is never stale: if that process is our guest it
// is the one running, even before QEMU has written its pid.
func Inspect(pidFile, disk, name string) (State, error) {
	if name == "" {
		name = DefaultName
	}
	diskInfo, err := statDisk(disk)
	if err != nil {
		return State{}, err
	}
	var st State
	b, err := os.ReadFile(pidFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return State{}, err
	default:
		st.Reason = "the pid file holds no pid"
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			if st.Reason = checkPID(pid, diskInfo, name); st.Reason == "" {
				return State{PID: pid, Running: true}, nil
			}
		}
		holder, held, err := PIDFileHolder(pidFile)
		if err != nil {
			return State{}, err
		}
		if held && holder > 0 && checkPID(holder, diskInfo, name) == "" {
			return State{PID: holder, Running: true}, nil
		}
		st.Stale, st.Holder = !held, holder
	}
	pid, err := findGuest(diskInfo, name)
	if err != nil {
		return st, err
	}
	if pid > 0 {
		st.PID, st.Running, st.ByScan = pid, true, true
	}
	return st, nil
}

// statDisk returns disk's file info, or nil when it does not exist (then no
// process can be running it).
func statDisk(disk string) (os.FileInfo, error) {
	fi, err := os.Stat(disk)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return fi, err
}

// PIDFileHolder reports whether a live process holds a POSIX lock on pidFile, as
// QEMU does on its -pidfile for as long as it runs, and which one (fcntl F_GETLK).
// pid is 0 when the holder is not visible from here (another pid namespace). A
// missing file is not held. Locks held by this process are not reported.
func PIDFileHolder(pidFile string) (pid int, held bool, err error) {
	f, err := os.Open(pidFile)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	// Closing this descriptor would drop locks this process held on the file; it
	// holds none (QEMU holds them).
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &lk); err != nil {
		return 0, false, fmt.Errorf("check the lock on %s: %w", pidFile, err)
	}
	if lk.Type == unix.F_UNLCK {
		return 0, false, nil
	}
	return max(int(lk.Pid), 0), true, nil
}

// RemoveStalePIDFile removes pidFile only when st says it is stale and no live
// process holds its lock.
//
// The lock is checked again here, since a QEMU may have started on the file after
// st was taken: removing the pid file of a live QEMU would let a second one start
// on the same workspace.
func RemoveStalePIDFile(pidFile string, st State) error {
	if !st.Stale {
		return nil
	}
	holder, held, err := PIDFileHolder(pidFile)
	if err != nil {
		return err
	}
	if held {
		return fmt.Errorf("the pid file %s is now held by %s: left in place", pidFile, processName(holder))
	}
	if err := os.Remove(pidFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// processName says "process N", or "another process" when N is unknown.
func processName(pid int) string {
	if pid > 0 {
		return "process " + strconv.Itoa(pid)
	}
	return "another process"
}

// FindGuest scans processes for the guest named name ("" means DefaultName)
// running disk; 0 when none. It uses /proc, or ps where there is none (macOS).
func FindGuest(disk, name string) (int, error) {
	if name == "" {
		name = DefaultName
	}
	fi, err := statDisk(disk)
	if err != nil {
		return 0, err
	}
	return findGuest(fi, name)
}

// findGuest is FindGuest for a disk already looked up.
func findGuest(disk os.FileInfo, name string) (int, error) {
	if disk == nil {
		return 0, nil
	}
	var procs []proc
	var err error
	if procfs() {
		procs, err = procCandidates(name)
	} else {
		procs, err = psCandidates()
	}
	if err != nil {
		return 0, fmt.Errorf("look for the guest among processes: %w", err)
	}
	for _, p := range procs {
		if identify(p, disk, name) == "" {
			return p.pid, nil
		}
	}
	return 0, nil
}

// KillResult says what Kill found and did.
type KillResult struct {
	State       // what Inspect found before the signal
	Killed bool // the guest was running and has been killed
}

// Kill SIGKILLs the guest Inspect finds (pid file or scan), waits for it to exit
// and removes a pid file that named it. Nothing that is not our guest is ever
// signalled: the identity is checked again just before the signal, and on Linux
// the signal goes through a pidfd, so a pid reused meanwhile is never hit. A stale
// pid file is reported in the result and left for RemoveStalePIDFile.
//
// Killed is false with Running true when the guest exited by itself between the
// check and the signal.
func Kill(ctx context.Context, pidFile, disk, name string) (KillResult, error) {
	if name == "" {
		name = DefaultName
	}
	st, err := Inspect(pidFile, disk, name)
	res := KillResult{State: st}
	if err != nil || !st.Running {
		return res, err
	}
	stillOurs := func() bool {
		fi, err := statDisk(disk)
		return err == nil && checkPID(st.PID, fi, name) == ""
	}
	sent, err := sigkill(st.PID, stillOurs)
	if err != nil || !sent {
		return res, err
	}
	if err := WaitExit(ctx, st.PID); err != nil {
		return res, err
	}
	res.Killed = true
	if st.ByScan {
		return res, nil
	}
	// The pid file named the guest (by content or by its lock). A SIGKILLed QEMU
	// cannot remove it; nobody holds it any more unless a new QEMU has started.
	// The killed process's lock can outlast it by a moment (its files are
	// closed as it is torn down), so that lock is waited out first.
	if err := waitLockReleased(ctx, pidFile, st.PID); err != nil {
		return res, err
	}
	if _, held, err := PIDFileHolder(pidFile); err != nil || held {
		return res, err
	}
	if err := os.Remove(pidFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return res, err
	}
	return res, nil
}

// lockRelease bounds how long a dead process's pid-file lock is waited out.
const lockRelease = time.Second

// waitLockReleased waits, up to lockRelease, until pid no longer holds
// pidFile's lock.
func waitLockReleased(ctx context.Context, pidFile string, pid int) error {
	deadline := time.Now().Add(lockRelease)
	for {
		holder, held, err := PIDFileHolder(pidFile)
		if err != nil || !held || holder != pid || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// sigkillPID sends SIGKILL to pid if ours confirms, just before, that it is our
// guest. sent is false when it is not (or no longer exists).
func sigkillPID(pid int, ours func() bool) (sent bool, err error) {
	if !ours() {
		return false, nil
	}
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return false, nil
		}
		return false, fmt.Errorf("send SIGKILL to pid %d: %w", pid, err)
	}
	return true, nil
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
