package workspace

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/rsonpath/armdev/internal/devshell"
	"github.com/rsonpath/armdev/internal/disk"
	"github.com/rsonpath/armdev/internal/guestssh"
	"github.com/rsonpath/armdev/internal/instance"
	"github.com/rsonpath/armdev/internal/progress"
	"github.com/rsonpath/armdev/internal/qemuvm"
)

// Start boots the provisioned disk in the background and returns once SSH
// answers as the guest user.
func (w *Workspace) Start(ctx context.Context) error {
	lk, err := w.lock(ctx, "start")
	if err != nil {
		return err
	}
	defer lk.Release()
	m, err := w.provisioned()
	if err != nil {
		return err
	}
	vm, rec, _ := w.guest()
	st, err := vm.Status()
	if err != nil {
		return err
	}
	if st.Running {
		w.say("the guest is already running (pid %d); SSH on 127.0.0.1:%d", st.PID, rec.SSHPort)
		return nil
	}
	c, _, err := w.boot(ctx, m.User(), m.RepinHostKey)
	if err != nil {
		return err
	}
	c.Close()
	return w.afterContact(m)
}

// boot starts QEMU on the working disk and waits for SSH as user; it
// returns the connection and how the VM was started.
func (w *Workspace) boot(ctx context.Context, user string, repin bool) (*guestssh.Client, instance.RunRecord, error) {
	var rec instance.RunRecord
	if err := w.requireTools(w.Cfg.QEMU); err != nil {
		return nil, rec, err
	}
	if err := qemuvm.PortFree(w.Cfg.SSHPort); err != nil {
		return nil, rec, err
	}
	uboot, err := w.ubootPath(ctx)
	if err != nil {
		return nil, rec, err
	}
	caps, err := w.hv.Probe(ctx, w.Cfg.QEMU)
	if err != nil {
		return nil, rec, err
	}
	qmp, err := qemuvm.SocketPath(w.l.QMPSocket())
	if err != nil {
		return nil, rec, err
	}
	serial, err := qemuvm.SocketPath(w.l.SerialSocket())
	if err != nil {
		return nil, rec, err
	}
	for _, dir := range []string{w.l.RunDir(), w.l.LogsDir()} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, rec, err
		}
	}
	spec := qemuvm.Spec{
		QEMU: w.Cfg.QEMU, UBoot: uboot, Disk: w.l.Disk(), ShareDir: w.Cfg.Share,
		NixConfigDir: w.Cfg.NixOSConfig, CPUs: w.Cfg.CPUs, MemoryMiB: w.Cfg.MemoryMiB,
		SSHPort: w.Cfg.SSHPort, Accel: w.Cfg.Accel, CPU: w.Cfg.CPU, GUI: w.Cfg.GUI,
		PIDFile: w.l.PIDFile(), QMPSocket: qmp, SerialSocket: serial, SerialLog: w.l.SerialLog(),
		Name: instance.GuestName,
	}
	accel, cpu := qemuvm.ChooseAccel(qemuvm.DetectHost(), spec, caps)
	_ = os.Remove(w.l.SerialLog()) // one boot per log
	w.say("starting the guest (accel %s, cpu %s, %d CPUs, %d MiB)", accel, cpu, spec.CPUs, spec.MemoryMiB)
	proc, err := w.hv.Start(ctx, spec, accel, cpu, w.l.QEMULog())
	if err != nil {
		return nil, rec, fmt.Errorf("start the guest: %w", err)
	}
	rec = instance.RunRecord{PID: proc.PID, SSHPort: spec.SSHPort, Accel: accel, CPU: cpu, QMP: qmp, Serial: serial, Cmdline: proc.Cmdline}
	if err := w.l.SaveRun(rec); err != nil {
		return nil, rec, err
	}
	c, err := w.waitSSH(ctx, user, rec, repin)
	return c, rec, err
}

// waitSSH polls the guest's sshd until it logs user in, showing the serial
// console's latest line meanwhile.
func (w *Workspace) waitSSH(ctx context.Context, user string, rec instance.RunRecord, repin bool) (*guestssh.Client, error) {
	opts, err := w.sshOptions(user, rec, repin)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, w.Cfg.BootTimeout)
	defer cancel()
	status := progress.Line{W: w.Err, Terminal: isTerminal(w.Err)}
	start := time.Now()
	lastShown, lastLine := time.Time{}, ""
	tick := func() {
		line, _ := qemuvm.LastLine(w.l.SerialLog())
		line = strings.TrimSpace(line)
		if len(line) > 70 {
			line = line[:70]
		}
		// plain output: a line when the console moved on, at most every 10 s
		if status.Terminal || (time.Since(lastShown) > 10*time.Second && line != lastLine) {
			status.Show(fmt.Sprintf("booting %3.0fs  %s", time.Since(start).Seconds(), line))
			lastShown, lastLine = time.Now(), line
		}
	}
	c, err := guestssh.WaitReady(ctx, opts, 150*time.Millisecond, tick)
	status.Clear()
	switch {
	case err == nil:
		w.say("the guest is up after %.1fs: SSH on 127.0.0.1:%d (`just arm-dev-ssh`)", time.Since(start).Seconds(), rec.SSHPort)
		return c, nil
	case errors.Is(err, guestssh.ErrHostKeyMismatch):
		return nil, err // its message says what happened and what to do
	case errors.Is(err, guestssh.ErrAuthRefused):
		return nil, fmt.Errorf("%w: %s (the guest keeps running: `just arm-dev-kill` stops it)", err, w.authHint(user))
	case errors.Is(ctx.Err(), context.Canceled):
		return nil, errors.New("interrupted while waiting for SSH: the guest keeps booting in the background (`just arm-dev-status`, `just arm-dev-kill`)")
	}
	if st, _ := w.vm().Status(); !st.Running {
		return nil, fmt.Errorf("the guest stopped before SSH answered: %w\n%s", err, w.serialTail())
	}
	return nil, fmt.Errorf("%w (ARMDEV_BOOT_TIMEOUT=%s); the guest is still running (`just arm-dev-console` to look, `just arm-dev-kill` to stop)\n%s", err, w.Cfg.BootTimeout, w.serialTail())
}

// serialTail quotes the end of the serial log for error messages.
func (w *Workspace) serialTail() string {
	lines, err := qemuvm.TailLines(w.l.SerialLog(), 15)
	if err != nil || len(lines) == 0 {
		return "(no serial output in " + w.l.SerialLog() + ")"
	}
	return "last lines of " + w.l.SerialLog() + ":\n  " + strings.Join(lines, "\n  ")
}

// Shutdown powers the guest off: poweroff over SSH, else the power button
// (QMP system_powerdown), then QMP quit, then SIGKILL, reporting each step.
func (w *Workspace) Shutdown(ctx context.Context) error {
	lk, err := w.lock(ctx, "shutdown")
	if err != nil {
		return err
	}
	defer lk.Release()
	vm, rec, recErr := w.guest()
	st, err := vm.Status()
	if err != nil {
		return err
	}
	if !st.Running {
		w.say("the guest is not running")
		return w.l.ClearRun()
	}
	if recErr != nil {
		return recErr
	}
	rec.PID = st.PID // the pid file may be gone (found by scan)
	// A hung guest accepts TCP (QEMU does) but never answers: bound the try.
	var c guestssh.Runner
	dctx, cancel := context.WithTimeout(ctx, min(w.Cfg.ShutdownTimeout, 20*time.Second))
	if client, _, err := w.connect(dctx); err != nil {
		w.say("SSH unavailable (%v)", err)
	} else {
		c = client
	}
	cancel()
	return w.powerOff(ctx, rec, c, "sudo poweroff")
}

// Kill SIGKILLs this workspace's QEMU, after checking that the process
// really is it (its name and its disk); nothing else is ever killed. It
// does not wait for another armdev in the workspace: it is the way out when
// one hangs.
func (w *Workspace) Kill(ctx context.Context) error {
	lk, err := w.l.Acquire(ctx, "kill", false, nil)
	if err != nil {
		return err
	}
	defer lk.Release()
	return w.kill(ctx)
}

// kill is Kill without the lock.
func (w *Workspace) kill(ctx context.Context) error {
	res, err := w.vm().Kill(ctx)
	if err != nil {
		return fmt.Errorf("kill the guest: %w", err)
	}
	switch {
	case res.Killed && res.ByScan:
		w.say("killed QEMU (pid %d, found by its name and disk: the pid file was missing or stale)", res.PID)
	case res.Killed:
		w.say("killed QEMU (pid %d)", res.PID)
	default:
		w.say("the guest is not running")
	}
	if res.Stale {
		if err := qemuvm.RemoveStalePIDFile(w.l.PIDFile(), res.State); err != nil {
			return err
		}
		w.say("removed a stale pid file (%s); killed nothing else", res.Reason)
	}
	return w.l.ClearRun()
}

// Console attaches the terminal to the serial console.
func (w *Workspace) Console(ctx context.Context) error {
	vm := w.vm()
	st, err := vm.Status()
	if err != nil {
		return err
	}
	if !st.Running {
		return errors.New("the guest is not running: start it with `just arm-dev`")
	}
	return qemuvm.Attach(ctx, vm.SerialSocket, w.In, w.Out)
}

// Status prints what the workspace is doing. It changes nothing.
func (w *Workspace) Status(ctx context.Context) error {
	vm, rec, _ := w.guest()
	st, err := vm.Status()
	if err != nil {
		return err
	}
	wd, err := w.l.LoadDisk()
	if err != nil {
		return err
	}
	user := w.Cfg.User
	if wd.State == instance.KnownDisk && wd.Meta.Provisioned {
		user = wd.Meta.User()
	}
	switch {
	case st.Running && st.ByScan:
		w.say("guest:   running (pid %d, found by its name and disk: the pid file is missing or stale)", st.PID)
	case st.Running:
		w.say("guest:   running (pid %d)", st.PID)
	default:
		w.say("guest:   stopped")
	}
	if st.Running {
		w.say("ssh:     127.0.0.1:%d as %s (`just arm-dev-ssh`)", rec.SSHPort, user)
		w.say("accel:   %s, cpu %s", rec.Accel, rec.CPU)
	} else {
		w.say("ssh:     127.0.0.1:%d when running", w.Cfg.SSHPort)
		if st.Stale {
			w.say("note:    a stale pid file (%s); `just arm-dev` replaces it", st.Reason)
		}
	}
	w.say("share:   %s at /rsonpath", w.Cfg.Share)
	switch wd.State {
	case instance.NoDisk:
		w.say("disk:    none yet (`just arm-dev-init`)")
		return nil
	case instance.UnknownDisk:
		w.say("disk:    %s, metadata unreadable (%v): `just arm-dev-init` offers to replace it", w.l.Disk(), wd.MetaErr)
		return nil
	}
	m := wd.Meta
	if alloc, err := disk.Allocated(w.l.Disk()); err == nil {
		baseAlloc, _ := disk.Allocated(w.l.Base(m.BaseKey))
		w.say("disk:    %s: %s on the host (+ base %s)", w.l.Disk(), progress.Bytes(alloc), progress.Bytes(baseAlloc))
	}
	w.say("image:   NixOS %s, Hydra build %d (%s)", m.Release, m.BuildID, m.Image)
	if !m.Provisioned {
		w.say("state:   not provisioned yet (`just arm-dev-init`)")
		return nil
	}
	w.say("state:   provisioned %s", m.ProvisionedAt.Local().Format(time.DateTime))
	changed, err := w.configChanged(m)
	if err != nil {
		return err
	}
	if changed {
		w.say("config:  share/etc/nixos or the workspace's identity changed since it was last applied: run `just arm-dev-update`")
	} else {
		w.say("config:  share/etc/nixos applied")
	}
	w.say("devshell: %s", w.devShellStatus(ctx, st.Running))
	return nil
}

// devShellStatus says whether the project's dev environment is cached in
// the guest and current.
func (w *Workspace) devShellStatus(ctx context.Context, running bool) string {
	spec, err := w.devShell()
	switch {
	case err != nil:
		return err.Error()
	case !w.Cfg.NixShell:
		return "off (ARMDEV_NIX_SHELL=0)"
	case spec.Kind == devshell.None:
		return "none (the project has no shell.nix, default.nix or flake devShells)"
	case !running:
		return fmt.Sprintf("%s (whether it is cached shows while the guest runs)", spec)
	}
	c, _, err := w.connect(ctx)
	if err != nil {
		return fmt.Sprintf("%s (unknown: %v)", spec, err)
	}
	defer c.Close()
	var out strings.Builder
	if _, err := c.Run(ctx, spec.StatusCommand(), nil, &out, nil); err != nil {
		return fmt.Sprintf("%s (unknown: %v)", spec, err)
	}
	return fmt.Sprintf("%s, %s", spec, devshell.ParseStatus(out.String()))
}
