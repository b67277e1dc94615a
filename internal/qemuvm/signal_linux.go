package qemuvm

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// sigkill sends SIGKILL to pid if ours confirms, just before, that it is our guest.
// It goes through a pidfd taken before the check, so the check and the signal are
// about one process even if pid is reused in between: a reused pid's new process
// either fails the check or, if the old one is gone, is not the pidfd's process.
// Kernels without pidfds (before 5.3) or that refuse them fall back to kill(2).
// sent is false when pid is not our guest or no longer exists.
func sigkill(pid int, ours func() bool) (sent bool, err error) {
	fd, err := unix.PidfdOpen(pid, 0)
	switch {
	case errors.Is(err, unix.ESRCH):
		return false, nil
	case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EPERM):
		return sigkillPID(pid, ours)
	case err != nil:
		return false, fmt.Errorf("send SIGKILL to pid %d: %w", pid, err)
	}
	defer unix.Close(fd)
	if !ours() {
		return false, nil
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return false, nil
		}
		return false, fmt.Errorf("send SIGKILL to pid %d: %w", pid, err)
	}
	return true, nil
}
