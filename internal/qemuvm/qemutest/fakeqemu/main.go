// Command fakeqemu is a fake qemu-system-aarch64 for tests. Package qemutest
// builds it, says what it does, and sets how its guest behaves: a
// qemutest.Behaviour in the file qemutest.BehaviourFile next to the path it
// was started as, read anew at every event.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/rsonpath/armdev/internal/qemuvm/qemutest"
)

func init() {
	// prctl(PR_SET_NAME) names the calling thread, and /proc/PID/comm is the
	// main thread's name: main stays on the main thread until it has named
	// the process.
	runtime.LockOSThread()
}

func main() {
	os.Exit(run(os.Args))
}

// fake is one run of the fake QEMU.
type fake struct {
	prog string // QEMU's name in its messages: the base name it was run as
	dir  string // the folder of its behaviour file
	done chan struct{}
	once sync.Once
	code int

	mu       sync.Mutex
	cleanups []func()
}

func run(args []string) int {
	f := &fake{prog: filepath.Base(args[0]), dir: selfDir(args[0]), done: make(chan struct{})}
	cl, err := parse(args[1:])
	if err != nil {
		f.report(err)
		return 1
	}
	if cl.version {
		fmt.Println("QEMU emulator version 7.2.0 (armdev qemutest fake)")
		fmt.Println("Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers")
		return 0
	}
	if msg := f.behaviour().FailStart; msg != "" {
		fmt.Fprintf(os.Stderr, "%s: %s\n", f.prog, msg)
		return 1
	}
	if cl.process != "" {
		nameProcess(cl.process)
	}
	runtime.UnlockOSThread()
	defer f.cleanup()
	if err := f.setup(cl); err != nil {
		f.report(err)
		return 1
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1)
	go func() {
		for s := range sigs {
			if s == syscall.SIGUSR1 { // qemutest.Fake.Halt
				f.exit(0, "the guest powered off")
			} else {
				f.exit(0, fmt.Sprintf("%s: terminating on signal %d", f.prog, s.(syscall.Signal)))
			}
		}
	}()
	f.register()
	go f.watchdog()
	<-f.done
	return f.code
}

// report prints err as QEMU prints a fatal error.
func (f *fake) report(err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", f.prog, err)
}

// logf notes an event in QEMU's output (logs/qemu.log), for whoever reads a
// failed test's logs.
func (f *fake) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "fakeqemu: "+format+"\n", args...)
}

// exit makes run return code; the first call wins.
func (f *fake) exit(code int, why string) {
	f.once.Do(func() {
		f.logf("exit %d: %s", code, why)
		f.code = code
		close(f.done)
	})
}

// atExit registers what to undo when QEMU exits cleanly.
func (f *fake) atExit(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups = append(f.cleanups, fn)
}

func (f *fake) cleanup() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
	f.cleanups = nil
}

// behaviour reads how the guest behaves now; the zero Behaviour when there
// is no file.
func (f *fake) behaviour() qemutest.Behaviour {
	var b qemutest.Behaviour
	data, err := os.ReadFile(filepath.Join(f.dir, qemutest.BehaviourFile))
	if err != nil {
		return b
	}
	if err := json.Unmarshal(data, &b); err != nil {
		f.logf("%s: %v", qemutest.BehaviourFile, err)
	}
	return b
}

// selfDir is the folder of the path the fake was run as (a symlink that
// qemutest.New made), found on PATH when it was run by name.
func selfDir(argv0 string) string {
	if !strings.Contains(argv0, "/") {
		if p, err := exec.LookPath(argv0); err == nil {
			argv0 = p
		}
	}
	return filepath.Dir(argv0)
}

// register notes the fake's pid for qemutest.Fake.Halt.
func (f *fake) register() {
	dir := filepath.Join(f.dir, qemutest.PIDsDir)
	entry := filepath.Join(dir, strconv.Itoa(os.Getpid()))
	if err := os.MkdirAll(dir, 0o755); err == nil && os.WriteFile(entry, nil, 0o644) == nil {
		f.atExit(func() { _ = os.Remove(entry) })
	}
}

// watchdog ends the fake once the process that started it (the test
// binary; QEMU runs in a session of its own) is gone, so that a failed
// test leaves nothing running.
func (f *fake) watchdog() {
	parent := os.Getppid()
	for range time.Tick(100 * time.Millisecond) {
		if os.Getppid() != parent {
			f.exit(0, "the process that started the fake QEMU is gone")
			return
		}
	}
}

// nameProcess names the process as QEMU does for -name …,process=NAME.
func nameProcess(name string) {
	b := []byte(name)
	if len(b) > 15 { // the kernel keeps 15 bytes and a NUL
		b = b[:15]
	}
	b = append(b, 0)
	_ = unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&b[0])), 0, 0, 0)
}

// setup does what QEMU does before the guest runs, in QEMU's order: the pid
// file, the chardevs and the monitor, the network, the disk. On an error the
// caller prints it and exits; what was set up is undone by cleanup.
func (f *fake) setup(cl cmdline) error {
	if cl.pidFile != "" {
		if err := f.pidFile(cl.pidFile); err != nil {
			return err
		}
	}
	serials := map[string]bool{}
	for _, s := range cl.serials {
		if id, ok := strings.CutPrefix(s, "chardev:"); ok {
			serials[id] = true
		}
	}
	for _, c := range cl.chardevs {
		if err := f.chardev(c, serials); err != nil {
			return err
		}
	}
	if cl.qmp != "" {
		if err := f.monitor(cl.qmp); err != nil {
			return err
		}
	}
	for _, n := range cl.netdevs {
		if err := f.netdev(n); err != nil {
			return err
		}
	}
	for _, d := range cl.drives {
		if err := f.drive(d); err != nil {
			return err
		}
	}
	return nil
}

// strerror is err as C's strerror spells it (QEMU's messages use it).
func strerror(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		err = errno
	}
	var ne *net.OpError
	if errors.As(err, &ne) {
		err = ne.Err
	}
	s := err.Error()
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
