package qemuvm

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// workspace makes a folder holding an (empty) disk file and returns the folder,
// the disk and the pid file path in it.
func workspace(t *testing.T, dir string) (disk, pidFile string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	disk = filepath.Join(dir, "disk.qcow2")
	writeFile(t, disk, "")
	return disk, filepath.Join(dir, "qemu.pid")
}

// guestArgs is QEMU's command line for a guest of disk, as Start would run it.
func guestArgs(disk string) []string {
	spec := baseSpec()
	spec.Disk = disk
	return Args(spec, "tcg", "max")
}

func TestInspectNoPIDFile(t *testing.T) {
	disk, pidFile := workspace(t, t.TempDir())
	st, err := Inspect(pidFile, disk, "")
	if err != nil || st != (State{}) {
		t.Fatalf("Inspect = %+v, %v; want zero state", st, err)
	}
	res, err := Kill(t.Context(), pidFile, disk, "")
	if err != nil || res != (KillResult{}) {
		t.Fatalf("Kill = %+v, %v", res, err)
	}
	if err := RemoveStalePIDFile(pidFile, st); err != nil {
		t.Fatal(err)
	}
}

// A pid file that names no live guest is reported stale and left alone by
// Inspect; RemoveStalePIDFile removes it.
func TestInspectStalePIDFile(t *testing.T) {
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, content, reason string }{
		{"garbage", "hello\n", "the pid file holds no pid"},
		{"empty", "", "the pid file holds no pid"},
		{"dead process", strconv.Itoa(dead.Process.Pid) + "\n", "no process " + strconv.Itoa(dead.Process.Pid)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			disk, pidFile := workspace(t, t.TempDir())
			writeFile(t, pidFile, tc.content)
			st, err := Inspect(pidFile, disk, "")
			if err != nil || st != (State{Stale: true, Reason: tc.reason}) {
				t.Fatalf("Inspect = %+v, %v; want stale, %q", st, err, tc.reason)
			}
			if !exists(pidFile) {
				t.Fatal("Inspect removed the pid file")
			}
			if err := RemoveStalePIDFile(pidFile, State{}); err != nil || !exists(pidFile) {
				t.Fatalf("RemoveStalePIDFile without Stale: %v, exists %v", err, exists(pidFile))
			}
			if err := RemoveStalePIDFile(pidFile, st); err != nil || exists(pidFile) {
				t.Fatalf("RemoveStalePIDFile: %v, exists %v", err, exists(pidFile))
			}
		})
	}
}

// A process that is the guest by name and disk is killed, and its pid file removed.
func TestKillGuest(t *testing.T) {
	disk, pidFile := workspace(t, filepath.Join(t.TempDir(), "my, work"))
	pid := startFake(t, DefaultName, guestArgs(disk)...)
	writePID(t, pidFile, pid)

	st, err := Inspect(pidFile, disk, "")
	if err != nil || st != (State{PID: pid, Running: true}) {
		t.Fatalf("Inspect = %+v, %v", st, err)
	}
	res, err := Kill(t.Context(), pidFile, disk, "")
	if err != nil || !res.Killed || res.PID != pid {
		t.Fatalf("Kill = %+v, %v", res, err)
	}
	if alive(pid) {
		t.Error("guest still alive after Kill")
	}
	if exists(pidFile) {
		t.Error("pid file not removed")
	}
}

// A state folder reached through a symlink is the same workspace, whichever
// spelling started the guest and whichever checks it.
func TestInspectSymlinkedStateFolder(t *testing.T) {
	for _, startViaLink := range []bool{true, false} {
		t.Run("started via link "+strconv.FormatBool(startViaLink), func(t *testing.T) {
			realDir := filepath.Join(t.TempDir(), "state")
			disk, pidFile := workspace(t, realDir)
			link := filepath.Join(t.TempDir(), "link")
			if err := os.Symlink(realDir, link); err != nil {
				t.Fatal(err)
			}
			linkDisk, linkPIDFile := filepath.Join(link, "disk.qcow2"), filepath.Join(link, "qemu.pid")
			checkDisk, checkPIDFile := linkDisk, linkPIDFile
			if startViaLink {
				disk, checkDisk = checkDisk, disk
				pidFile, checkPIDFile = checkPIDFile, pidFile
			}
			pid := startFake(t, DefaultName, guestArgs(disk)...)
			writePID(t, pidFile, pid)

			st, err := Inspect(checkPIDFile, checkDisk, "")
			if err != nil || st != (State{PID: pid, Running: true}) {
				t.Fatalf("Inspect = %+v, %v; want running pid %d", st, err, pid)
			}
			if !exists(pidFile) {
				t.Fatal("the live guest's pid file was removed")
			}
			res, err := Kill(t.Context(), checkPIDFile, checkDisk, "")
			if err != nil || !res.Killed || alive(pid) || exists(pidFile) {
				t.Fatalf("Kill = %+v, %v; alive %v, pid file %v", res, err, alive(pid), exists(pidFile))
			}
		})
	}
}

// With no pid file, or one naming something else, the guest is found by scanning
// processes; a stale pid file is reported and left for RemoveStalePIDFile.
func TestFindGuestWithoutPIDFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "my, work")
	disk, pidFile := workspace(t, dir)
	other, _ := workspace(t, filepath.Join(t.TempDir(), "other"))
	decoy := startFake(t, DefaultName, guestArgs(other)...)
	// A relative disk, as a hand-run QEMU might have: it is resolved against the
	// guest's own working folder.
	cmd := fakeCmd(t, DefaultName, guestArgs("disk.qcow2")...)
	cmd.Dir = dir
	pid := runFake(t, cmd)

	if got, err := FindGuest(disk, ""); err != nil || got != pid {
		t.Fatalf("FindGuest = %d, %v; want %d", got, err, pid)
	}
	st, err := Inspect(pidFile, disk, "")
	if err != nil || st != (State{PID: pid, Running: true, ByScan: true}) {
		t.Fatalf("Inspect = %+v, %v; want found by scan", st, err)
	}

	writePID(t, pidFile, decoy)
	st, err = Inspect(pidFile, disk, "")
	want := State{PID: pid, Running: true, ByScan: true, Stale: true, Reason: "process " + strconv.Itoa(decoy) + " runs another disk"}
	if err != nil || st != want {
		t.Fatalf("Inspect = %+v, %v; want %+v", st, err, want)
	}
	res, err := Kill(t.Context(), pidFile, disk, "")
	if err != nil || res != (KillResult{State: want, Killed: true}) {
		t.Fatalf("Kill = %+v, %v", res, err)
	}
	if alive(pid) || !alive(decoy) {
		t.Fatalf("after Kill: guest alive %v, decoy alive %v", alive(pid), alive(decoy))
	}
	if !exists(pidFile) {
		t.Fatal("Kill removed a pid file that did not name the guest")
	}
	if err := RemoveStalePIDFile(pidFile, res.State); err != nil || exists(pidFile) {
		t.Fatalf("RemoveStalePIDFile: %v, exists %v", err, exists(pidFile))
	}
}

// Processes that look like the guest but are not are never reported nor killed,
// whether a pid file names them or a scan comes across them.
func TestDecoysNeverReportedNorKilled(t *testing.T) {
	dir := t.TempDir()
	disk, _ := workspace(t, dir)
	otherDir := filepath.Join(t.TempDir(), "other")
	other, _ := workspace(t, otherDir)
	otherName := baseSpec()
	otherName.Disk, otherName.Name = disk, "armdev-guest-2"
	tests := []struct {
		name, comm, dir string
		args            []string
		reason          string
	}{
		{"other program", "sleeper", "", guestArgs(disk), `is "sleeper"`},
		{"same name, not qemu", DefaultName, "", []string{"300"}, "not a QEMU guest named armdev-guest"},
		{"other guest name", DefaultName, "", Args(otherName, "tcg", "max"), "not a QEMU guest named armdev-guest"},
		{"same name, other disk", DefaultName, "", guestArgs(other), "runs another disk"},
		{"disk path as a drive option only", DefaultName, "", []string{"-name", "armdev-guest,process=armdev-guest", "-device", "file=" + disk}, "runs another disk"},
		{"relative disk in another folder", DefaultName, otherDir, guestArgs("disk.qcow2"), "runs another disk"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := fakeCmd(t, tc.comm, tc.args...)
			cmd.Dir = tc.dir
			pid := runFake(t, cmd)
			pidFile := filepath.Join(t.TempDir(), "qemu.pid")

			// Found by no scan.
			if got, err := FindGuest(disk, ""); err != nil || got != 0 {
				t.Errorf("FindGuest = %d, %v; want none", got, err)
			}
			if res, err := Kill(t.Context(), pidFile, disk, ""); err != nil || res != (KillResult{}) {
				t.Errorf("Kill without a pid file = %+v, %v", res, err)
			}

			// Named by the pid file.
			writePID(t, pidFile, pid)
			res, err := Kill(t.Context(), pidFile, disk, "")
			if err != nil || res.Killed || res.Running || !res.Stale || !strings.Contains(res.Reason, tc.reason) {
				t.Errorf("Kill = %+v, %v; want stale with reason containing %q", res, err, tc.reason)
			}
			if !exists(pidFile) {
				t.Error("Kill removed the pid file")
			}
			if !alive(pid) {
				t.Fatal("an unrelated process was killed")
			}
		})
	}
}

// startLocker runs a fake process named name with args that holds a POSIX lock on
// pidFile, as QEMU does, writing its pid there when writePID is set.
func startLocker(t *testing.T, pidFile string, writePID bool, name string, args ...string) int {
	t.Helper()
	cmd := fakeCmd(t, name, args...)
	cmd.Env = append(cmd.Env, fakeLockEnv+"="+pidFile)
	if writePID {
		cmd.Env = append(cmd.Env, fakeWritePIDEnv+"=1")
	}
	pid := runFake(t, cmd)
	waitFor(t, func() bool {
		holder, held, err := PIDFileHolder(pidFile)
		return err == nil && held && holder == pid
	})
	return pid
}

// A pid file whose lock a live process holds is never stale and never removed,
// even when that process is not our guest; when it is, the guest runs even
// before QEMU has written its pid.
func TestPIDFileHeld(t *testing.T) {
	t.Run("by another process", func(t *testing.T) {
		disk, pidFile := workspace(t, t.TempDir())
		other, _ := workspace(t, filepath.Join(t.TempDir(), "other"))
		holder := startLocker(t, pidFile, true, "qemu-system-aar", guestArgs(other)...)

		st, err := Inspect(pidFile, disk, "")
		want := State{Holder: holder, Reason: "process " + strconv.Itoa(holder) + ` is "qemu-system-aar", not the guest`}
		if err != nil || st != want {
			t.Fatalf("Inspect = %+v, %v; want %+v", st, err, want)
		}
		if err := RemoveStalePIDFile(pidFile, State{Stale: true}); err == nil || !exists(pidFile) {
			t.Errorf("RemoveStalePIDFile on a held pid file: %v, exists %v", err, exists(pidFile))
		}
		if res, err := Kill(t.Context(), pidFile, disk, ""); err != nil || res.Killed || !alive(holder) || !exists(pidFile) {
			t.Errorf("Kill = %+v, %v; holder alive %v, pid file %v", res, err, alive(holder), exists(pidFile))
		}
		spec, qemuLog := fakeStartSpec(t, "echo ran >&2; exit 1\n")
		spec.Disk, spec.PIDFile = disk, pidFile
		wantErr := "another QEMU (pid " + strconv.Itoa(holder) + ") holds this workspace's pid file " + pidFile + ": stop that guest first"
		if _, err := Start(t.Context(), spec, "tcg", "max", qemuLog); err == nil || err.Error() != wantErr {
			t.Errorf("Start = %v, want %q", err, wantErr)
		}
		if exists(qemuLog) {
			t.Error("Start ran QEMU on a held pid file")
		}
	})
	t.Run("by our guest, pid not yet written", func(t *testing.T) {
		disk, pidFile := workspace(t, t.TempDir())
		pid := startLocker(t, pidFile, false, DefaultName, guestArgs(disk)...)
		st, err := Inspect(pidFile, disk, "")
		if err != nil || st != (State{PID: pid, Running: true}) {
			t.Fatalf("Inspect = %+v, %v; want running pid %d", st, err, pid)
		}
		res, err := Kill(t.Context(), pidFile, disk, "")
		if err != nil || !res.Killed || alive(pid) || exists(pidFile) {
			t.Fatalf("Kill = %+v, %v; alive %v, pid file %v", res, err, alive(pid), exists(pidFile))
		}
	})
}

func TestPIDFileHolderUnlocked(t *testing.T) {
	_, pidFile := workspace(t, t.TempDir())
	if pid, held, err := PIDFileHolder(pidFile); err != nil || held || pid != 0 {
		t.Errorf("missing pid file: %d, %v, %v", pid, held, err)
	}
	writePID(t, pidFile, os.Getpid())
	if pid, held, err := PIDFileHolder(pidFile); err != nil || held || pid != 0 {
		t.Errorf("unlocked pid file: %d, %v, %v", pid, held, err)
	}
}
