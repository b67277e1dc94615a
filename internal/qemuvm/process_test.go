package qemuvm

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeGuestEnv makes the test binary act as a long-running process: run through a
// symlink named armdev-guest it has the guest's process name and any command line.
const fakeGuestEnv = "ARMDEV_QEMUVM_FAKE_GUEST"

func TestMain(m *testing.M) {
	if os.Getenv(fakeGuestEnv) == "1" {
		time.Sleep(10 * time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startFake runs the test binary as a process named name with args, and kills it when
// the test ends.
func startFake(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), name)
	if err := os.Symlink(self, link); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(link, args...)
	cmd.Env = append(os.Environ(), fakeGuestEnv+"=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	waitFor(t, func() bool {
		comm, _, err := procInfo(cmd.Process.Pid)
		return err == nil && comm == truncComm(name)
	})
	return cmd
}

// waitFor polls cond until it holds or 10 seconds pass.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func writePID(t *testing.T, path string, pid int) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func TestRunningNoPIDFile(t *testing.T) {
	st, err := Running(filepath.Join(t.TempDir(), "qemu.pid"), "/d/disk.qcow2", "")
	if err != nil || st != (State{}) {
		t.Fatalf("Running = %+v, %v; want zero state", st, err)
	}
	res, err := Kill(context.Background(), filepath.Join(t.TempDir(), "qemu.pid"), "/d/disk.qcow2", "")
	if err != nil || res.Killed || res.Stale {
		t.Fatalf("Kill = %+v, %v", res, err)
	}
}

func TestRunningGarbagePIDFile(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "qemu.pid")
	if err := os.WriteFile(pidFile, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := Running(pidFile, "/d/disk.qcow2", "")
	if err != nil || st.Running || !st.Stale || exists(pidFile) {
		t.Fatalf("Running = %+v, %v; pid file exists %v", st, err, exists(pidFile))
	}
}

func TestRunningDeadProcess(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(t.TempDir(), "qemu.pid")
	writePID(t, pidFile, cmd.Process.Pid)
	res, err := Kill(context.Background(), pidFile, "/d/disk.qcow2", "")
	if err != nil || res.Killed || !res.Stale || !strings.Contains(res.Reason, "no process") || exists(pidFile) {
		t.Fatalf("Kill = %+v, %v; pid file exists %v", res, err, exists(pidFile))
	}
}

// A pid file naming a process that is not the guest must never get it killed.
func TestKillSparesOtherProcesses(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "disk.qcow2")
	guestName := "armdev-guest,process=armdev-guest"
	tests := []struct {
		name, comm string
		args       []string
		reason     string
	}{
		{"other program", "sleeper", []string{"-name", guestName, "-drive", "file=" + disk + ","}, `is "sleeper"`},
		{"same name, not qemu", "armdev-guest", []string{"300"}, "not a QEMU guest"},
		{"same name, other disk", "armdev-guest", []string{"-name", guestName, "-drive", "if=none,file=/elsewhere/disk.qcow2,format=qcow2"}, "another disk"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := startFake(t, tc.comm, tc.args...)
			pidFile := filepath.Join(t.TempDir(), "qemu.pid")
			writePID(t, pidFile, cmd.Process.Pid)

			res, err := Kill(context.Background(), pidFile, disk, "")
			if err != nil {
				t.Fatal(err)
			}
			if res.Killed || res.Running || !res.Stale || !strings.Contains(res.Reason, tc.reason) {
				t.Errorf("Kill = %+v, want stale with reason containing %q", res, tc.reason)
			}
			if exists(pidFile) {
				t.Error("stale pid file not removed")
			}
			if !alive(cmd.Process.Pid) {
				t.Fatal("an unrelated process was killed")
			}
		})
	}
}

// A process that is the guest by name and disk is killed, and its pid file removed.
func TestKillGuest(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "my, work")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk.qcow2")
	spec := baseSpec()
	spec.Disk = disk
	cmd := startFake(t, "armdev-guest", Args(spec, "tcg", "max")...)
	pidFile := filepath.Join(dir, "qemu.pid")
	writePID(t, pidFile, cmd.Process.Pid)

	st, err := Running(pidFile, disk, "")
	if err != nil || !st.Running || st.PID != cmd.Process.Pid {
		t.Fatalf("Running = %+v, %v", st, err)
	}
	res, err := Kill(context.Background(), pidFile, disk, "")
	if err != nil || !res.Killed || res.PID != cmd.Process.Pid {
		t.Fatalf("Kill = %+v, %v", res, err)
	}
	if alive(cmd.Process.Pid) {
		t.Error("guest still alive after Kill")
	}
	if exists(pidFile) {
		t.Error("pid file not removed")
	}
}

func holdPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestPortFree(t *testing.T) {
	if err := PortFree(freePort(t)); err != nil {
		t.Errorf("free port: %v", err)
	}
	port := holdPort(t)
	err := PortFree(port)
	var pe *PortInUseError
	if !errors.As(err, &pe) || pe.Port != port {
		t.Fatalf("PortFree(held) = %v", err)
	}
	want := "SSH port " + strconv.Itoa(port) + " on 127.0.0.1 is in use: set ARMDEV_SSH_PORT to a free port"
	if err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
}

const uboot = "/usr/lib/u-boot/qemu_arm64/u-boot.bin"

// realSpec prepares a guest with the real QEMU and u-boot and an empty disk, in a
// folder whose name needs QEMU's comma escaping.
func realSpec(t *testing.T) (Spec, string) {
	t.Helper()
	qemu := needQEMU(t)
	if testing.Short() {
		t.Skip("starts QEMU")
	}
	if !exists(uboot) {
		t.Skip("no u-boot at " + uboot)
	}
	dir := filepath.Join(t.TempDir(), "my, work")
	for _, d := range []string{dir, filepath.Join(dir, "repo"), filepath.Join(dir, "nixos")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	disk := filepath.Join(dir, "disk.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", disk, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	spec := Spec{
		QEMU: qemu, UBoot: uboot, Disk: disk,
		ShareDir: filepath.Join(dir, "repo"), NixConfigDir: filepath.Join(dir, "nixos"),
		CPUs: 1, MemoryMiB: 256, SSHPort: freePort(t),
		PIDFile: filepath.Join(dir, "qemu.pid"), QMPSocket: filepath.Join(dir, "qmp.sock"),
		SerialSocket: filepath.Join(dir, "serial.sock"), SerialLog: filepath.Join(dir, "serial.log"),
	}
	return spec, filepath.Join(dir, "qemu.log")
}

// killOnCleanup makes sure a QEMU started by a test does not outlive it.
func killOnCleanup(t *testing.T, pid int) {
	t.Cleanup(func() {
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

func TestStartRealQEMU(t *testing.T) {
	spec, qemuLog := realSpec(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	started := time.Now()
	pid, err := Start(ctx, spec, "tcg,thread=multi", "max,pauth-impdef=on", qemuLog)
	if err != nil {
		t.Fatal(err)
	}
	killOnCleanup(t, pid)
	t.Logf("QEMU ready in %v", time.Since(started))

	st, err := Running(spec.PIDFile, spec.Disk, "")
	if err != nil || !st.Running || st.PID != pid {
		t.Fatalf("Running = %+v, %v; want pid %d", st, err, pid)
	}
	comm, _, err := procInfo(pid)
	if err != nil || comm != DefaultName {
		t.Errorf("process name %q, %v", comm, err)
	}
	sid, err := unix.Getsid(pid)
	if err != nil || sid != pid {
		t.Errorf("QEMU session %d, %v; want its own session %d", sid, err, pid)
	}

	q, err := DialQMP(ctx, spec.QMPSocket)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(q.Version, ".") != 2 {
		t.Errorf("QMP version %q", q.Version)
	}
	vs, err := q.Status(ctx)
	if err != nil || !vs.Running || vs.Status != "running" {
		t.Errorf("Status = %+v, %v", vs, err)
	}
	var qe *QMPError
	if _, err := q.Execute(ctx, "no-such-command", nil); !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("unknown command: %v", err)
	}
	q.Close()

	// u-boot prints its banner on the serial port, which lands in the log even with
	// nobody attached.
	waitFor(t, func() bool {
		b, _ := os.ReadFile(spec.SerialLog)
		return strings.Contains(string(b), "U-Boot")
	})

	if _, err := Start(ctx, spec, "tcg", "max", qemuLog); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second Start: %v", err)
	}

	res, err := Kill(ctx, spec.PIDFile, spec.Disk, "")
	if err != nil || !res.Killed || res.PID != pid {
		t.Fatalf("Kill = %+v, %v", res, err)
	}
	if alive(pid) || exists(spec.PIDFile) {
		t.Fatalf("after Kill: alive %v, pid file %v", alive(pid), exists(spec.PIDFile))
	}

	// A restart over the leftovers of a killed QEMU (sockets) works, and QMP quit
	// ends it cleanly.
	pid, err = Start(ctx, spec, "tcg", "max", qemuLog)
	if err != nil {
		t.Fatal(err)
	}
	killOnCleanup(t, pid)
	q, err = DialQMP(ctx, spec.QMPSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if err := q.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := WaitExit(ctx, pid); err != nil {
		t.Fatal(err)
	}
	if st, err := Running(spec.PIDFile, spec.Disk, ""); err != nil || st.Running {
		t.Errorf("after quit: %+v, %v", st, err)
	}
}

// Every device armdev adds, the GUI set included, starts on a QEMU without
// ipxe-qemu's option ROMs (a minimal install: containers, CI,
// --no-install-recommends). Only the display is swapped for none, since tests
// have no screen.
func TestDevicesNeedNoROM(t *testing.T) {
	spec, qemuLog := realSpec(t)
	spec.GUI = true
	args := Args(spec, "tcg", "max")
	for i := range args {
		if args[i] == "-display" {
			args[i+1] = "none"
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	logf, err := os.Create(qemuLog)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, spec.QEMU, append(args, "-S")...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var q *QMP
	for q == nil {
		select {
		case err := <-exited:
			out, _ := os.ReadFile(qemuLog)
			t.Fatalf("QEMU exited (%v) with the GUI devices: %s", err, out)
		case <-ctx.Done():
			t.Fatal("QEMU did not answer QMP")
		case <-time.After(50 * time.Millisecond):
		}
		q, _ = DialQMP(ctx, spec.QMPSocket)
	}
	defer q.Close()
	if err := q.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	<-exited
	if out, _ := os.ReadFile(qemuLog); strings.Contains(string(out), "romfile") {
		t.Errorf("QEMU complained about a ROM: %s", out)
	}
}

// When the SSH port is taken after the check, QEMU's own failure becomes the same
// clear error.
func TestStartPortInUse(t *testing.T) {
	spec, qemuLog := realSpec(t)
	spec.SSHPort = holdPort(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	_, err := Start(ctx, spec, "tcg", "max", qemuLog)
	var pe *PortInUseError
	if !errors.As(err, &pe) || pe.Port != spec.SSHPort {
		t.Fatalf("Start = %v, want PortInUseError", err)
	}

	spec, err = resolvePaths(spec)
	if err != nil {
		t.Fatal(err)
	}
	_, err = launch(ctx, spec, "tcg", "max", qemuLog)
	if !errors.As(err, &pe) || pe.Port != spec.SSHPort {
		log, _ := os.ReadFile(qemuLog)
		t.Fatalf("launch = %v, want PortInUseError; QEMU log: %s", err, log)
	}
}

func TestStartQEMUFails(t *testing.T) {
	spec, qemuLog := realSpec(t)
	spec.UBoot = filepath.Join(t.TempDir(), "missing-u-boot.bin")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := Start(ctx, spec, "tcg", "max", qemuLog)
	if err == nil || !strings.Contains(err.Error(), "missing-u-boot.bin") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Start = %v, want one line naming the missing firmware", err)
	}
	t.Log(err)
}
