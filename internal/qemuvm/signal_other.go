//go:build !linux

package qemuvm

// sigkill sends SIGKILL to pid if ours confirms, just before, that it is our guest.
// sent is false when pid is not our guest or no longer exists.
func sigkill(pid int, ours func() bool) (sent bool, err error) {
	return sigkillPID(pid, ours)
}
