// Package qemutest gives tests a fake qemu-system-aarch64 that behaves like
// QEMU at the interfaces armdev uses, so that the code starting, finding,
// stopping and talking to the guest is tested through the real process,
// pid file, sockets and port, in milliseconds and without an image.
//
// The fake (the program in ./fakeqemu) accepts the command line qemuvm.Args
// builds and, like QEMU:
//   - names its process after -name's process= (prctl PR_SET_NAME), so that
//     armdev's identity check (process name, process=, -drive file=)
//     recognises it;
//   - writes its pid to -pidfile and holds a POSIX lock on it while it runs,
//     and removes it when it exits cleanly;
//   - takes QEMU's image locks on the -drive file (qemu-img then refuses to
//     write a running guest's disk, and a second guest on it fails with
//     QEMU's message);
//   - serves QMP on -qmp unix:PATH (greeting, qmp_capabilities, query-status,
//     system_powerdown, quit) or on stdio, and answers --version, so that
//     qemuvm.ProbeCaps works too;
//   - listens on the serial chardev's socket, writes u-boot's first lines to
//     its logfile, and echoes what a console types;
//   - binds -netdev user's hostfwd port on 127.0.0.1 and forwards each
//     connection to the guest's sshd, which a test provides (an sshtest
//     server);
//   - fails at start with QEMU's own messages when the port is taken, the
//     disk is in use, the pid file is held or the disk is missing.
//
// What the guest does (answer SSH or not, obey the power button, …) is a
// Behaviour, which a test sets per Fake and may change while the fake runs.
// The fake exits by itself when the process that started it (the test
// binary) is gone, so a failed test leaves nothing running.
package qemutest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rsonpath/armdev/internal/qemuvm"
	"github.com/rsonpath/armdev/internal/testutil"
)

// BehaviourFile is the file, next to the path a fake runs as, that says how
// it behaves (a Behaviour in JSON). The fake reads it at every event.
const BehaviourFile = "fakeqemu.json"

// PIDsDir is the folder, next to the path a fake runs as, in which each
// running fake keeps a file named after its pid (for Halt).
const PIDsDir = "fakeqemu.pids"

// Behaviour is what a fake QEMU's guest does. The zero value is a guest that
// boots, whose sshd is not up, and that obeys the power button at once.
type Behaviour struct {
	// FailStart makes QEMU print this message and exit with status 1 before
	// doing anything, as when it rejects its command line.
	FailStart string `json:"fail_start,omitempty"`
	// SSH is the guest's sshd (host:port, an sshtest server) to which
	// connections to the forwarded port go. Empty means the guest's sshd
	// does not answer: connections are accepted and closed, as QEMU's
	// user-mode network does when the guest refuses them.
	SSH string `json:"ssh,omitempty"`
	// HoldSSH makes connections to the forwarded port be accepted and then
	// stay silent, as they do before the guest's network is up (and on a
	// hung guest).
	HoldSSH bool `json:"hold_ssh,omitempty"`
	// HaltAtSSH makes the guest power off when a connection reaches the
	// forwarded port: a guest that dies while it boots.
	HaltAtSSH bool `json:"halt_at_ssh,omitempty"`
	// Serial is what the guest prints on its serial console at start, one
	// line each; nil means a few lines of u-boot.
	Serial []string `json:"serial,omitempty"`
	// IgnorePowerButton makes the guest ignore system_powerdown, as u-boot
	// and a hung guest do.
	IgnorePowerButton bool `json:"ignore_power_button,omitempty"`
	// PowerdownDelay is how long the guest takes to power off after the
	// power button.
	PowerdownDelay time.Duration `json:"powerdown_delay,omitempty"`
	// RefuseQuit makes QMP quit answer with an error, QEMU running on.
	RefuseQuit bool `json:"refuse_quit,omitempty"`
}

// Fake is one test's fake QEMU: a path to run as qemu-system-aarch64 and the
// behaviour of the guests it runs.
type Fake struct {
	// Path is the program to run as QEMU (Spec.QEMU, ARMDEV_QEMU).
	Path string
	dir  string
}

// New returns a fake QEMU of the test's own that behaves as b says.
func New(t testing.TB, b Behaviour) *Fake {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	f := &Fake{Path: filepath.Join(dir, "qemu-system-aarch64"), dir: dir}
	if err := os.Symlink(bin, f.Path); err != nil {
		t.Fatal(err)
	}
	f.Set(t, b)
	// Whatever the test left running goes with it (t.TempDir's own cleanup,
	// registered above, runs after this one).
	t.Cleanup(f.killAll)
	return f
}

// Set changes the behaviour of f's guests, including those running now, from
// their next event on (a connection, a QMP command).
func (f *Fake) Set(t testing.TB, b Behaviour) {
	t.Helper()
	data, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	// Written whole and renamed, so that a running fake never reads half.
	tmp := filepath.Join(f.dir, BehaviourFile+".new")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(f.dir, BehaviourFile)); err != nil {
		t.Fatal(err)
	}
}

// Halt powers off every guest f runs, as `poweroff` in the guest would: QEMU
// exits cleanly (removing its pid file). It returns how many it reached and
// does not wait for them to exit.
func (f *Fake) Halt() int {
	n := 0
	f.each(func(pid int) {
		if syscall.Kill(pid, syscall.SIGUSR1) == nil {
			n++
		}
	})
	return n
}

// each calls fn with the pid of every guest of f that runs now.
func (f *Fake) each(fn func(pid int)) {
	bin, err := filepath.EvalSymlinks(f.Path)
	if err != nil {
		return
	}
	entries, _ := os.ReadDir(filepath.Join(f.dir, PIDsDir))
	for _, e := range entries {
		// A fake that was killed leaves its entry, and its pid may be reused:
		// only a process that is one of f's fakes is signalled.
		if pid, err := strconv.Atoi(e.Name()); err == nil && f.runs(pid, bin) {
			fn(pid)
		}
	}
}

// killAll SIGKILLs every guest of f still running and waits for it to go.
func (f *Fake) killAll() {
	f.each(func(pid int) {
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = qemuvm.WaitExit(ctx, pid)
		}
	})
}

// runs reports whether process pid is one of f's fakes: it runs the fake's
// binary, started as f.Path.
func (f *Fake) runs(pid int, bin string) bool {
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil || exe != bin {
		return false
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	argv0, _, _ := bytes.Cut(cmdline, []byte{0})
	return err == nil && string(argv0) == f.Path
}

var build struct {
	once sync.Once
	path string
	err  error
}

// Binary returns the fake QEMU program, built with `go build` the first time
// a test binary asks. It lives in a private folder of this user's under the
// temp folder, where the go command rebuilds it only when its sources
// changed (it takes a few hundredths of a second to find that they did not).
func Binary(t testing.TB) string {
	t.Helper()
	build.once.Do(func() { build.path, build.err = buildFake() })
	if build.err != nil {
		t.Fatalf("build the fake QEMU: %v", build.err)
	}
	return build.path
}

// fakePackage is the fake QEMU's import path.
const fakePackage = "github.com/rsonpath/armdev/internal/qemuvm/qemutest/fakeqemu"

func buildFake() (string, error) {
	goCmd, err := exec.LookPath("go") // go test puts its own go first on PATH
	if err != nil {
		return "", err
	}
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("armdev-qemutest-%d", os.Getuid()))
	if err := privateDir(dir); err != nil {
		return "", err
	}
	// One program per checkout, so that two checkouts' tests never run each
	// other's. The go command writes it elsewhere and renames it into place,
	// so test binaries building at the same time never run a half-written one.
	mod, err := exec.Command(goCmd, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	sum := sha256.Sum256(bytes.TrimSpace(mod))
	out := filepath.Join(dir, "fakeqemu-"+hex.EncodeToString(sum[:6]))
	cmd := exec.Command(goCmd, "build", "-o", out, fakePackage)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", fakePackage, err, msg)
	}
	return out, nil
}

// privateDir makes dir, or checks that it is this user's own directory
// that nobody else can write: a program others could replace must not run.
func privateDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Getuid() || fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is not a private directory of this user's: remove it", dir)
	}
	return nil
}

// Spec returns a guest spec that runs f, with its files in a folder of the
// test's own: an empty disk (the fake only locks it), a u-boot file, the pid
// file, the QMP and serial sockets, the serial log, and a free SSH port.
func (f *Fake) Spec(t testing.TB) qemuvm.Spec {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"disk.qcow2", "u-boot.bin"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return qemuvm.Spec{
		QEMU: f.Path, UBoot: filepath.Join(dir, "u-boot.bin"), Disk: filepath.Join(dir, "disk.qcow2"),
		CPUs: 1, MemoryMiB: 256, SSHPort: testutil.Port(t),
		PIDFile: filepath.Join(dir, "qemu.pid"), QMPSocket: filepath.Join(dir, "qmp.sock"),
		SerialSocket: filepath.Join(dir, "serial.sock"), SerialLog: filepath.Join(dir, "serial.log"),
	}
}

// LogFile is where Start sends QEMU's output: qemu.log next to the pid file.
func LogFile(spec qemuvm.Spec) string {
	return filepath.Join(filepath.Dir(spec.PIDFile), "qemu.log")
}

// Start runs spec's QEMU (a Fake's Path) with qemuvm.Start, as armdev does
// (TCG, cpu max, output to LogFile), and fails the test with the command
// line to reproduce and QEMU's output when it does not start. The Fake's
// cleanup stops it.
func Start(t testing.TB, spec qemuvm.Spec) qemuvm.Process {
	t.Helper()
	p, err := qemuvm.Start(t.Context(), spec, "tcg", "max", LogFile(spec))
	if err != nil {
		out, _ := os.ReadFile(LogFile(spec))
		t.Fatalf("start the fake QEMU: %v\nQEMU command line to reproduce:\n%s\nits output:\n%s", err, p.Cmdline, out)
	}
	return p
}
