// Package workspace is armdev's orchestration: it ties the configuration,
// the download, the disk, QEMU and SSH together into the steps the mage
// targets run, and decides what has to be rebuilt. What the workspace is on
// disk (file names, metadata, the lock, the VM handle) lives in
// internal/instance; this package is what it does.
package workspace

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/rsonpath/armdev/internal/config"
	"github.com/rsonpath/armdev/internal/instance"
	"github.com/rsonpath/armdev/internal/qemuvm"
)

// Workspace is one armdev machine: its settings and its state folder.
type Workspace struct {
	// Cfg is the validated configuration.
	Cfg config.Config
	// In is where answers to questions and interactive input come from.
	In *os.File
	// Out receives progress and results; Err receives warnings.
	Out, Err io.Writer
	// Now tells the time (for backups' names); time.Now by default.
	Now func() time.Time

	l  instance.Layout
	hv hypervisor
	// hostID is the host user's uid and gid (os.Getuid, os.Getgid).
	hostID func() (uid, gid int)
	// authGrace is how long the boot wait lets the guest refuse the key
	// (guestssh.Options.AuthGrace; 0 is guestssh's default). Tests shorten it.
	authGrace time.Duration
}

// hypervisor is how the workspace starts QEMU and reaches its monitor: the
// real QEMU in production, a fake in unit tests.
type hypervisor interface {
	// Probe asks the QEMU binary what it supports.
	Probe(ctx context.Context, qemu string) (qemuvm.Caps, error)
	// Start runs QEMU in the background; see qemuvm.Start.
	Start(ctx context.Context, spec qemuvm.Spec, accel, cpu, logPath string) (qemuvm.Process, error)
	// DialMonitor connects to QMP.
	DialMonitor(ctx context.Context, socket string) (qemuvm.Monitor, error)
}

// qemu is the real hypervisor.
type qemu struct{}

func (qemu) Probe(ctx context.Context, bin string) (qemuvm.Caps, error) {
	return qemuvm.ProbeCaps(ctx, bin)
}

func (qemu) Start(ctx context.Context, spec qemuvm.Spec, accel, cpu, logPath string) (qemuvm.Process, error) {
	return qemuvm.Start(ctx, spec, accel, cpu, logPath)
}

func (qemu) DialMonitor(ctx context.Context, socket string) (qemuvm.Monitor, error) {
	return qemuvm.DialMonitor(ctx, socket)
}

// Open loads the configuration of the armdev checkout at root from the
// environment and returns its workspace.
func Open(root string) (*Workspace, error) {
	cfg, err := config.Load(root, os.LookupEnv)
	if err != nil {
		return nil, err
	}
	return New(cfg), nil
}

// New returns the workspace for cfg, talking to the process's terminal.
func New(cfg config.Config) *Workspace {
	return &Workspace{
		Cfg: cfg, In: os.Stdin, Out: os.Stdout, Err: os.Stderr, Now: time.Now,
		l: instance.Layout{Dir: cfg.StateDir}, hv: qemu{},
		hostID: func() (int, int) { return os.Getuid(), os.Getgid() },
	}
}

// ArgsFromEnv reads the arguments .just-run passes one variable each
// (ARMDEV_ARGC, ARMDEV_ARG_0, …), so that no quoting is lost on the way.
// A leading "--" is dropped.
func ArgsFromEnv(env config.Env) []string {
	v, _ := env("ARMDEV_ARGC")
	n, _ := strconv.Atoi(v)
	args := make([]string, 0, n)
	for i := range n {
		a, _ := env("ARMDEV_ARG_" + strconv.Itoa(i))
		args = append(args, a)
	}
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	return args
}

// lock takes the workspace lock for op, waiting (and saying so) while
// another armdev holds it.
func (w *Workspace) lock(ctx context.Context, op string) (*instance.Lock, error) {
	return w.l.Acquire(ctx, op, true, func(s string) { fmt.Fprintln(w.Err, s) })
}

// guest reads the run record once and returns the handle on this
// workspace's QEMU (with the record's sockets) and how it was started
// (without a record, the configured port). The handle is usable even when
// the record is not: err is the record's.
func (w *Workspace) guest() (instance.VM, instance.RunRecord, error) {
	rec, ok, err := w.l.LoadRun()
	v := w.l.VM(rec)
	v.DialMonitor = w.hv.DialMonitor
	if err == nil && !ok {
		rec.SSHPort = w.Cfg.SSHPort
	}
	return v, rec, err
}

// vm is the handle on this workspace's QEMU.
func (w *Workspace) vm() instance.VM {
	v, _, _ := w.guest()
	return v
}

// unknownDiskError explains a disk whose metadata is gone.
func (w *Workspace) unknownDiskError(wd instance.WorkingDisk) error {
	return fmt.Errorf("the working disk %s has no readable metadata (%v): run `just arm-dev-init`, which asks before making a new disk and keeps this one as a backup", w.l.Disk(), wd.MetaErr)
}

// provisioned returns the metadata of a provisioned working disk, or an
// error that says what to run.
func (w *Workspace) provisioned() (instance.DiskMeta, error) {
	wd, err := w.l.LoadDisk()
	if err != nil {
		return instance.DiskMeta{}, err
	}
	switch {
	case wd.State == instance.UnknownDisk:
		return instance.DiskMeta{}, w.unknownDiskError(wd)
	case wd.State == instance.NoDisk || !wd.Meta.Provisioned:
		return instance.DiskMeta{}, errors.New("there is no provisioned disk yet: run `just arm-dev-init` first")
	}
	return wd.Meta, nil
}

// isTerminal reports whether f is an interactive terminal.
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	return ok && term.IsTerminal(int(file.Fd()))
}

// confirm asks a yes/no question before a destructive step: ARMDEV_YES=1
// says yes, a terminal is asked, anything else is a no.
func (w *Workspace) confirm(question string) (bool, error) {
	if w.Cfg.Yes {
		return true, nil
	}
	if w.In == nil || !isTerminal(w.In) {
		return false, nil
	}
	fmt.Fprintf(w.Out, "%s [y/N] ", question)
	line, err := bufio.NewReader(w.In).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("read answer: %w", err)
	}
	answer := strings.ToLower(strings.TrimSpace(line))
	return answer == "y" || answer == "yes", nil
}

func (w *Workspace) say(format string, args ...any) {
	fmt.Fprintf(w.Out, format+"\n", args...)
}

func (w *Workspace) warn(format string, args ...any) {
	fmt.Fprintf(w.Err, format+"\n", args...)
}
