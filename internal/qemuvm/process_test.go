package qemuvm

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rsonpath/armdev/internal/fetch"
	"golang.org/x/sys/unix"

	"github.com/rsonpath/armdev/internal/testutil"
)

// The test binary doubles as a fake guest: run with fakeGuestEnv=1 (through a
// symlink named armdev-guest, say) it has that process name and any command line,
// and stays until killed or until the test binary that started it is gone. With
// fakeLockEnv naming a file, it first takes a POSIX write lock on that file, as
// QEMU does on its -pidfile, and with fakeWritePIDEnv=1 writes its pid there.
const (
	fakeGuestEnv    = "ARMDEV_QEMUVM_FAKE_GUEST"
	fakeLockEnv     = "ARMDEV_QEMUVM_FAKE_LOCK"
	fakeWritePIDEnv = "ARMDEV_QEMUVM_FAKE_WRITE_PID"
)

func TestMain(m *testing.M) {
	if os.Getenv(fakeGuestEnv) == "1" {
		fakeGuest()
	}
	os.Exit(m.Run())
}

func fakeGuest() {
	var lockFile *os.File
	if path := os.Getenv(fakeLockEnv); path != "" {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		lockFile = f
		if err == nil {
			err = unix.FcntlFlock(f.Fd(), unix.F_SETLK, &unix.Flock_t{Type: unix.F_WRLCK})
		}
		if err == nil && os.Getenv(fakeWritePIDEnv) == "1" {
			_, err = f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
		}
		if err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(2)
		}
	}
	// A watchdog, not synchronisation: once the test binary is gone (this process
	// has been re-parented), nothing would kill this one.
	parent := os.Getppid()
	for os.Getppid() == parent {
		time.Sleep(100 * time.Millisecond)
	}
	runtime.KeepAlive(lockFile) // closing it would drop the lock
	os.Exit(0)
}

// fakeCmd prepares the test binary to run as a process named name with args.
func fakeCmd(t *testing.T, name string, args ...string) *exec.Cmd {
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
	return cmd
}

// runFake starts cmd (from fakeCmd), waits until it carries its name, and kills it
// when the test ends.
func runFake(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	pid := cmd.Process.Pid
	name := truncComm(filepath.Base(cmd.Path))
	waitFor(t, func() bool {
		select {
		case <-done:
			t.Fatalf("fake guest exited: %s", stderr.String())
		default:
		}
		p, err := readProc(pid)
		return err == nil && p.comm == name
	})
	return pid
}

// startFake runs the test binary as a process named name with args; see fakeCmd.
func startFake(t *testing.T, name string, args ...string) int {
	t.Helper()
	return runFake(t, fakeCmd(t, name, args...))
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
	writeFile(t, path, strconv.Itoa(pid)+"\n")
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func TestPortFree(t *testing.T) {
	if err := PortFree(testutil.Port(t)); err != nil {
		t.Errorf("free port: %v", err)
	}
	port := testutil.HeldPort(t)
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

const uboot = fetch.DebianUBootPath

// realSpec prepares a guest with the real QEMU and u-boot and an empty disk, in a
// folder whose name needs QEMU's comma escaping. It returns the spec and the path
// for QEMU's log.
func realSpec(t *testing.T) (Spec, string) {
	t.Helper()
	return realSpecIn(t, filepath.Join(t.TempDir(), "my, work"))
}

// realSpecIn is realSpec in the folder dir, which it creates.
func realSpecIn(t *testing.T, dir string) (Spec, string) {
	t.Helper()
	qemu := needQEMU(t)
	if testing.Short() {
		t.Skip("starts QEMU")
	}
	if !exists(uboot) {
		t.Skip("no u-boot at " + uboot)
	}
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
		CPUs: 1, MemoryMiB: 256, SSHPort: testutil.Port(t),
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

// startReal runs Start and makes sure the QEMU does not outlive the test.
func startReal(t *testing.T, spec Spec, qemuLog string) Process {
	t.Helper()
	p, err := Start(t.Context(), spec, "tcg,thread=multi", "max,pauth-impdef=on", qemuLog)
	if err != nil {
		t.Fatalf("Start: %v\nQEMU command line to reproduce:\n%s", err, p.Cmdline)
	}
	killOnCleanup(t, p.PID)
	return p
}

func TestStartRealQEMU(t *testing.T) {
	spec, qemuLog := realSpec(t)
	ctx := t.Context()

	started := time.Now()
	p := startReal(t, spec, qemuLog)
	t.Logf("QEMU ready in %v", time.Since(started))

	st, err := Inspect(spec.PIDFile, spec.Disk, "")
	if err != nil || st != (State{PID: p.PID, Running: true}) {
		t.Fatalf("Inspect = %+v, %v; want running pid %d", st, err, p.PID)
	}
	proc, err := readProc(p.PID)
	if err != nil || proc.comm != DefaultName {
		t.Errorf("process name %q, %v", proc.comm, err)
	}
	sid, err := unix.Getsid(p.PID)
	if err != nil || sid != p.PID {
		t.Errorf("QEMU session %d, %v; want its own session %d", sid, err, p.PID)
	}

	// The log starts with the command line, which a shell reads back as exactly
	// the arguments QEMU got.
	log, err := os.ReadFile(qemuLog)
	if err != nil || !strings.HasPrefix(string(log), logHeader+p.Cmdline+"\n") {
		t.Errorf("QEMU log does not start with the command line %q:\n%s", p.Cmdline, log)
	}
	out, err := exec.Command("sh", "-c", `printf '%s\0' `+p.Cmdline).Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00"); !slices.Equal(got, proc.argv) {
		t.Errorf("the pasted command line gives\n%q\nQEMU runs\n%q", got, proc.argv)
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

	want := "the guest is already running (pid " + strconv.Itoa(p.PID) + ")"
	if _, err := Start(ctx, spec, "tcg", "max", qemuLog); err == nil || err.Error() != want {
		t.Errorf("second Start: %v, want %q", err, want)
	}

	res, err := Kill(ctx, spec.PIDFile, spec.Disk, "")
	if err != nil || !res.Killed || res.PID != p.PID || res.ByScan {
		t.Fatalf("Kill = %+v, %v", res, err)
	}
	if alive(p.PID) || exists(spec.PIDFile) {
		t.Fatalf("after Kill: alive %v, pid file %v", alive(p.PID), exists(spec.PIDFile))
	}

	// A restart over the leftovers of a killed QEMU (sockets) works, and QMP quit
	// through the Monitor interface ends it cleanly.
	p = startReal(t, spec, qemuLog)
	m, err := DialMonitor(ctx, spec.QMPSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := WaitExit(ctx, p.PID); err != nil {
		t.Fatal(err)
	}
	if st, err := Inspect(spec.PIDFile, spec.Disk, ""); err != nil || st.Running {
		t.Errorf("after quit: %+v, %v", st, err)
	}
}

// A state folder reached through a symlink is the same workspace: the running
// guest is recognised through either spelling, and kill works through either.
func TestRealQEMUThroughSymlink(t *testing.T) {
	spec, qemuLog := realSpec(t)
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(filepath.Dir(spec.Disk), link); err != nil {
		t.Fatal(err)
	}
	viaLink := func(p string) string { return filepath.Join(link, filepath.Base(p)) }
	started := spec
	started.Disk, started.PIDFile = viaLink(spec.Disk), viaLink(spec.PIDFile)
	p := startReal(t, started, qemuLog)

	st, err := Inspect(spec.PIDFile, spec.Disk, "")
	if err != nil || st != (State{PID: p.PID, Running: true}) {
		t.Fatalf("Inspect through the real path = %+v, %v; want running pid %d", st, err, p.PID)
	}
	res, err := Kill(t.Context(), spec.PIDFile, spec.Disk, "")
	if err != nil || !res.Killed || res.PID != p.PID {
		t.Fatalf("Kill = %+v, %v", res, err)
	}
	if alive(p.PID) || exists(spec.PIDFile) {
		t.Errorf("after Kill: alive %v, pid file %v", alive(p.PID), exists(spec.PIDFile))
	}
}

// QEMU's lock on its pid file keeps a second QEMU out of the workspace: Start
// refuses up front, and when it gets as far as QEMU, QEMU's refusal becomes the
// same clear error. The first guest keeps its pid file.
func TestRealQEMUPIDFileHeld(t *testing.T) {
	spec, qemuLog := realSpec(t)
	first := startReal(t, spec, qemuLog)

	// Another guest (its own disk, sockets and port) on the same pid file.
	second, secondLog := realSpecIn(t, filepath.Join(t.TempDir(), "second"))
	second.PIDFile = spec.PIDFile
	want := "another QEMU (pid " + strconv.Itoa(first.PID) + ") holds this workspace's pid file " + spec.PIDFile + ": stop that guest first"
	if _, err := Start(t.Context(), second, "tcg", "max", secondLog); err == nil || err.Error() != want {
		t.Errorf("Start = %v, want %q", err, want)
	}
	second, err := resolvePaths(second)
	if err != nil {
		t.Fatal(err)
	}
	p, err := launch(t.Context(), second, "tcg", "max", secondLog)
	if p.PID != 0 {
		killOnCleanup(t, p.PID)
	}
	if err == nil || err.Error() != want {
		log, _ := os.ReadFile(secondLog)
		t.Errorf("launch = %+v, %v; want %q; QEMU log:\n%s", p, err, want, log)
	}
	if b, _ := os.ReadFile(spec.PIDFile); strings.TrimSpace(string(b)) != strconv.Itoa(first.PID) || !alive(first.PID) {
		t.Errorf("the first guest (pid %d, alive %v) lost its pid file: it says %q", first.PID, alive(first.PID), b)
	}
	if holder, held, err := PIDFileHolder(spec.PIDFile); err != nil || !held || holder != first.PID {
		t.Errorf("PIDFileHolder = %d, %v, %v; want %d", holder, held, err, first.PID)
	}
}

// A guest whose pid file is gone (a wiped state folder) is found by scanning
// processes, and can be killed.
func TestRealQEMUWithoutPIDFile(t *testing.T) {
	spec, qemuLog := realSpec(t)
	p := startReal(t, spec, qemuLog)
	if err := os.Remove(spec.PIDFile); err != nil {
		t.Fatal(err)
	}
	if pid, err := FindGuest(spec.Disk, ""); err != nil || pid != p.PID {
		t.Errorf("FindGuest = %d, %v; want %d", pid, err, p.PID)
	}
	st, err := Inspect(spec.PIDFile, spec.Disk, "")
	if err != nil || st != (State{PID: p.PID, Running: true, ByScan: true}) {
		t.Fatalf("Inspect = %+v, %v; want found by scan, pid %d", st, err, p.PID)
	}
	want := "the guest is already running (pid " + strconv.Itoa(p.PID) + ")"
	if _, err := Start(t.Context(), spec, "tcg", "max", qemuLog); err == nil || err.Error() != want {
		t.Errorf("Start = %v, want %q", err, want)
	}
	res, err := Kill(t.Context(), spec.PIDFile, spec.Disk, "")
	if err != nil || !res.Killed || !res.ByScan || res.PID != p.PID || alive(p.PID) {
		t.Fatalf("Kill = %+v, %v; alive %v", res, err, alive(p.PID))
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
	spec.SSHPort = testutil.HeldPort(t)

	_, err := Start(t.Context(), spec, "tcg", "max", qemuLog)
	var pe *PortInUseError
	if !errors.As(err, &pe) || pe.Port != spec.SSHPort {
		t.Fatalf("Start = %v, want PortInUseError", err)
	}

	spec, err = resolvePaths(spec)
	if err != nil {
		t.Fatal(err)
	}
	_, err = launch(t.Context(), spec, "tcg", "max", qemuLog)
	if !errors.As(err, &pe) || pe.Port != spec.SSHPort {
		log, _ := os.ReadFile(qemuLog)
		t.Fatalf("launch = %v, want PortInUseError; QEMU log: %s", err, log)
	}
}

func TestStartQEMUFails(t *testing.T) {
	spec, qemuLog := realSpec(t)
	spec.UBoot = filepath.Join(t.TempDir(), "missing-u-boot.bin")
	p, err := Start(t.Context(), spec, "tcg", "max", qemuLog)
	want := "QEMU exited: Could not find ROM image '" + spec.UBoot + "'"
	if err == nil || err.Error() != want {
		t.Fatalf("Start = %v, want %q", err, want)
	}
	if p.PID != 0 || !strings.Contains(p.Cmdline, "missing-u-boot.bin") {
		t.Errorf("Process = %+v; want no pid and the command line", p)
	}
}

// fakeStartSpec is a spec whose QEMU is a shell script with body, for the paths
// of Start that need no real QEMU.
func fakeStartSpec(t *testing.T, body string) (Spec, string) {
	t.Helper()
	dir := t.TempDir()
	qemu := filepath.Join(dir, "qemu-system-aarch64")
	writeFile(t, qemu, "#!/bin/sh\n"+body)
	if err := os.Chmod(qemu, 0o755); err != nil {
		t.Fatal(err)
	}
	return Spec{
		QEMU: qemu, UBoot: filepath.Join(dir, "u-boot.bin"), Disk: filepath.Join(dir, "disk.qcow2"),
		PIDFile: filepath.Join(dir, "qemu.pid"), QMPSocket: filepath.Join(dir, "qmp.sock"),
		SerialSocket: filepath.Join(dir, "serial.sock"), SerialLog: filepath.Join(dir, "serial.log"),
	}, filepath.Join(dir, "qemu.log")
}

// QEMU's last words become the error, never the command line Start wrote at the
// top of the same log; the usual causes become instructions.
func TestStartExitMessages(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"silent", "exit 3\n", "QEMU exited (exit status 3) without a message"},
		{"message", "echo 'qemu-system-aarch64: -drive x: warning: odd' >&2\necho 'qemu-system-aarch64: it broke' >&2\nexit 1\n",
			"QEMU exited: -drive x: warning: odd | qemu-system-aarch64: it broke"},
		{"pid file locked", "echo 'qemu-system-aarch64: cannot create PID file: Cannot lock pid file: Resource temporarily unavailable' >&2\nexit 1\n",
			"another QEMU holds this workspace's pid file PIDFILE: stop that guest first"},
		{"disk locked", "echo 'qemu-system-aarch64: -drive if=none: Failed to get \"write\" lock' >&2\nexit 1\n",
			"the disk DISK is in use by another QEMU: stop that guest first"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec, qemuLog := fakeStartSpec(t, tc.body)
			p, err := Start(t.Context(), spec, "tcg", "max", qemuLog)
			want := strings.NewReplacer("PIDFILE", spec.PIDFile, "DISK", spec.Disk).Replace(tc.want)
			if err == nil || err.Error() != want {
				t.Errorf("Start = %v\nwant %q", err, want)
			}
			log, _ := os.ReadFile(qemuLog)
			if p.Cmdline == "" || !strings.HasPrefix(string(log), logHeader+p.Cmdline+"\n") {
				t.Errorf("log does not start with the command line %q:\n%s", p.Cmdline, log)
			}
		})
	}
}

// Start's own refusals say what is wrong without naming the operation, which the
// caller adds.
func TestStartRefusals(t *testing.T) {
	spec, qemuLog := fakeStartSpec(t, "echo ran >&2; exit 1\n")
	bad := spec
	bad.Disk = ""
	if _, err := Start(t.Context(), bad, "tcg", "max", qemuLog); err == nil || err.Error() != "guest spec: missing disk" {
		t.Errorf("Start without a disk = %v", err)
	}
	port := spec
	port.SSHPort = testutil.HeldPort(t)
	var pe *PortInUseError
	if _, err := Start(t.Context(), port, "tcg", "max", qemuLog); !errors.As(err, &pe) {
		t.Errorf("Start on a taken port = %v", err)
	}
	if exists(qemuLog) {
		t.Error("QEMU was run although Start refused")
	}
}
