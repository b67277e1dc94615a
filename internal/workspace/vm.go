package workspace

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rsonpath/armdev/internal/disk"
	"github.com/rsonpath/armdev/internal/guestssh"
	"github.com/rsonpath/armdev/internal/progress"
	"github.com/rsonpath/armdev/internal/qemuvm"
)

// guestName is QEMU's process name (-name …,process=), checked before kill.
const guestName = "armdev-guest"

// runInfo records how the running VM was started, for status and ssh.
type runInfo struct {
	PID     int    `json:"pid"`
	SSHPort int    `json:"ssh_port"`
	Accel   string `json:"accel"`
	CPU     string `json:"cpu"`
	QMP     string `json:"qmp"`
	Serial  string `json:"serial"`
}

// vmState tells whether this workspace's QEMU runs; a stale pid file is
// cleaned up and reported.
func (w *Workspace) vmState() (qemuvm.State, error) {
	st, err := qemuvm.Running(w.p.pid(), w.p.disk(), guestName)
	if err != nil {
		return st, fmt.Errorf("check guest: %w", err)
	}
	if st.Stale {
		fmt.Fprintf(w.Err, "removed a stale pid file (%s)\n", st.Reason)
	}
	return st, nil
}

// run reads how the running VM was started.
func (w *Workspace) run() (runInfo, error) {
	var ri runInfo
	err := readJSON(w.p.runInfo(), &ri)
	if errors.Is(err, fs.ErrNotExist) {
		return runInfo{SSHPort: w.Cfg.SSHPort}, nil
	}
	return ri, err
}

// Start boots the provisioned disk in the background and returns once SSH
// answers as the guest user.
func (w *Workspace) Start(ctx context.Context) error {
	m, ok, err := w.meta()
	if err != nil {
		return err
	}
	if !ok || !m.Provisioned {
		return fmt.Errorf("there is no provisioned disk yet: run `just arm-dev-init` first")
	}
	st, err := w.vmState()
	if err != nil {
		return err
	}
	if st.Running {
		ri, _ := w.run()
		w.say("the guest is already running (pid %d); SSH on 127.0.0.1:%d", st.PID, ri.SSHPort)
		return nil
	}
	c, err := w.boot(ctx, w.Cfg.User, m.RepinHostKey)
	if err != nil {
		return err
	}
	c.Close()
	return w.afterContact(m)
}

// afterContact clears the one-time permission to pin a new host key.
func (w *Workspace) afterContact(m DiskMeta) error {
	if !m.RepinHostKey {
		return nil
	}
	m.RepinHostKey = false
	return w.saveMeta(m)
}

// boot starts QEMU and waits for SSH as user; it returns the client.
func (w *Workspace) boot(ctx context.Context, user string, repin bool) (*guestssh.Client, error) {
	if err := w.requireTools(w.Cfg.QEMU); err != nil {
		return nil, err
	}
	if err := qemuvm.PortFree(w.Cfg.SSHPort); err != nil {
		return nil, err
	}
	uboot, err := w.ubootPath(ctx)
	if err != nil {
		return nil, err
	}
	caps, err := qemuvm.ProbeCaps(ctx, w.Cfg.QEMU)
	if err != nil {
		return nil, fmt.Errorf("start guest: %w", err)
	}
	host := qemuvm.DetectHost()
	qmp, err := qemuvm.SocketPath(w.p.qmp())
	if err != nil {
		return nil, fmt.Errorf("start guest: %w", err)
	}
	serial, err := qemuvm.SocketPath(w.p.serial())
	if err != nil {
		return nil, fmt.Errorf("start guest: %w", err)
	}
	for _, dir := range []string{w.p.run(), filepath.Dir(w.p.serialLog())} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("start guest: %w", err)
		}
	}
	spec := qemuvm.Spec{
		QEMU: w.Cfg.QEMU, UBoot: uboot, Disk: w.p.disk(), ShareDir: w.Cfg.Share,
		NixConfigDir: w.Cfg.NixOSConfig, CPUs: w.Cfg.CPUs, MemoryMiB: w.Cfg.MemoryMiB,
		SSHPort: w.Cfg.SSHPort, Accel: w.Cfg.Accel, CPU: w.Cfg.CPU, GUI: w.Cfg.GUI,
		PIDFile: w.p.pid(), QMPSocket: qmp, SerialSocket: serial, SerialLog: w.p.serialLog(),
	}
	accel, cpu := qemuvm.ChooseAccel(host, spec, caps)
	_ = os.Remove(w.p.serialLog())
	w.say("starting the guest (accel %s, cpu %s, %d CPUs, %d MiB)", accel, cpu, spec.CPUs, spec.MemoryMiB)
	pid, err := qemuvm.Start(ctx, spec, accel, cpu, w.p.qemuLog())
	if err != nil {
		return nil, fmt.Errorf("start guest: %w", err)
	}
	ri := runInfo{PID: pid, SSHPort: spec.SSHPort, Accel: accel, CPU: cpu, QMP: qmp, Serial: serial}
	if err := writeJSON(w.p.runInfo(), ri); err != nil {
		return nil, err
	}
	return w.waitSSH(ctx, user, ri, repin)
}

// waitSSH polls the guest's sshd until it completes a handshake as user,
// showing the serial console's latest line meanwhile.
func (w *Workspace) waitSSH(ctx context.Context, user string, ri runInfo, repin bool) (*guestssh.Client, error) {
	opts, err := w.sshOptions(user, ri, repin)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, w.Cfg.BootTimeout)
	defer cancel()
	status := progress.Line{W: w.Err, Terminal: isTerminal(w.Err)}
	start := time.Now()
	lastShown, lastLine := time.Time{}, ""
	tick := func() {
		line, _ := qemuvm.LastLine(w.p.serialLog())
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
	if err != nil {
		if errors.Is(err, guestssh.ErrHostKeyMismatch) {
			return nil, err // its message says what happened and what to do
		}
		if ctx.Err() == context.Canceled {
			return nil, fmt.Errorf("interrupted while waiting for SSH: the guest keeps booting in the background (`just arm-dev-status`, `just arm-dev-kill`)")
		}
		if st, _ := qemuvm.Running(w.p.pid(), w.p.disk(), guestName); !st.Running {
			return nil, fmt.Errorf("the guest stopped before SSH answered: %w\n%s", err, w.serialTail())
		}
		return nil, fmt.Errorf("SSH did not answer within %s (ARMDEV_BOOT_TIMEOUT): %w; the guest is still running (`just arm-dev-console` to look, `just arm-dev-kill` to stop)\n%s", w.Cfg.BootTimeout, err, w.serialTail())
	}
	w.say("the guest is up after %.1fs: SSH on 127.0.0.1:%d (`just arm-dev-ssh`)", time.Since(start).Seconds(), ri.SSHPort)
	return c, nil
}

// serialTail quotes the end of the serial log for error messages.
func (w *Workspace) serialTail() string {
	lines, err := qemuvm.TailLines(w.p.serialLog(), 15)
	if err != nil || len(lines) == 0 {
		return "(no serial output in " + w.p.serialLog() + ")"
	}
	return "last lines of " + w.p.serialLog() + ":\n  " + strings.Join(lines, "\n  ")
}

// Shutdown powers the guest off: poweroff over SSH, else the power button
// (QMP system_powerdown), then QMP quit, then SIGKILL, reporting each step.
func (w *Workspace) Shutdown(ctx context.Context) error {
	st, err := w.vmState()
	if err != nil {
		return err
	}
	if !st.Running {
		w.say("the guest is not running")
		return nil
	}
	ri, err := w.run()
	if err != nil {
		return err
	}
	// A hung guest accepts TCP (QEMU does) but never answers: bound the try.
	dctx, cancel := context.WithTimeout(ctx, min(w.Cfg.ShutdownTimeout, 20*time.Second))
	c, err := w.dial(dctx, w.Cfg.User, ri)
	cancel()
	if err != nil {
		w.say("SSH unavailable (%v)", err)
		c = nil
	}
	return w.powerOff(ctx, st.PID, ri, c, "sudo poweroff")
}

// powerOff runs the shutdown chain against pid: poweroff over the SSH
// client c (when there is one), then the power button, quit and SIGKILL.
// It closes c.
func (w *Workspace) powerOff(ctx context.Context, pid int, ri runInfo, c *guestssh.Client, poweroff string) error {
	wait := func(d time.Duration) bool {
		wctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return qemuvm.WaitExit(wctx, pid) == nil
	}
	asked := false
	if c != nil {
		w.say("asking the guest to power off over SSH")
		// The connection drops as the guest goes down; that is expected.
		_, _ = c.Run(ctx, poweroff, nil, nil, nil)
		c.Close()
		asked = true
	}
	if !asked || !wait(w.Cfg.ShutdownTimeout) {
		if asked {
			w.say("the guest did not power off within %s", w.Cfg.ShutdownTimeout)
		}
		w.say("pressing the power button (QMP system_powerdown)")
		if q, err := qemuvm.DialQMP(ctx, ri.QMP); err == nil {
			_ = q.Powerdown(ctx)
			q.Close()
			if wait(w.Cfg.ShutdownTimeout) {
				return w.stopped()
			}
			w.say("no reaction within %s: asking QEMU to quit", w.Cfg.ShutdownTimeout)
			if q, err := qemuvm.DialQMP(ctx, ri.QMP); err == nil {
				_ = q.Quit(ctx)
				q.Close()
			}
			if wait(10 * time.Second) {
				return w.stopped()
			}
		}
		w.say("killing QEMU")
		if _, err := qemuvm.Kill(ctx, w.p.pid(), w.p.disk(), guestName); err != nil {
			return fmt.Errorf("shutdown: %w", err)
		}
	}
	return w.stopped()
}

// stopped cleans up after QEMU exited.
func (w *Workspace) stopped() error {
	_ = os.Remove(w.p.pid())
	_ = os.Remove(w.p.runInfo())
	w.say("the guest is off")
	return nil
}

// Kill SIGKILLs this workspace's QEMU through its pid file, after checking
// that the pid really is it; nothing else is ever killed.
func (w *Workspace) Kill(ctx context.Context) error {
	res, err := qemuvm.Kill(ctx, w.p.pid(), w.p.disk(), guestName)
	if err != nil {
		return fmt.Errorf("kill: %w", err)
	}
	switch {
	case res.Killed:
		w.say("killed QEMU (pid %d)", res.PID)
	case res.Stale:
		w.say("the pid file named another process (%s): removed it, killed nothing", res.Reason)
	default:
		w.say("the guest is not running")
	}
	_ = os.Remove(w.p.runInfo())
	return nil
}

// Reset returns the working disk to the "provisioned" snapshot, after a
// yes: everything done in the guest since then is discarded.
func (w *Workspace) Reset(ctx context.Context) error {
	m, ok, err := w.meta()
	if err != nil {
		return err
	}
	if !ok || !m.Provisioned {
		return fmt.Errorf("nothing to reset to: the disk was never provisioned; run `just arm-dev-init`")
	}
	if err := w.requireTools(w.Cfg.QEMUImg); err != nil {
		return err
	}
	yes, err := w.confirm("Reset discards everything done in the guest since provisioning (home directories, installed packages, the nix store; /rsonpath on the host is not touched). Continue?")
	if err != nil {
		return err
	}
	if !yes {
		return fmt.Errorf("reset needs a yes: answer y on a terminal or set ARMDEV_YES=1")
	}
	if st, err := w.vmState(); err != nil {
		return err
	} else if st.Running {
		w.say("stopping the guest first")
		if _, err := qemuvm.Kill(ctx, w.p.pid(), w.p.disk(), guestName); err != nil {
			return fmt.Errorf("reset: %w", err)
		}
		_ = os.Remove(w.p.runInfo())
	}
	before, _ := disk.Allocated(w.p.disk())
	if err := disk.RevertSnapshot(ctx, w.Cfg.QEMUImg, w.p.disk(), provisionedSnapshot); err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	m.RepinHostKey = true
	if err := w.saveMeta(m); err != nil {
		return err
	}
	w.say("reset to the state provisioned on %s: discarded every change made in the guest since then (the disk file held %s)", m.ProvisionedAt.Local().Format(time.DateTime), progress.Bytes(before))
	return nil
}

// Console attaches the terminal to the serial console.
func (w *Workspace) Console(ctx context.Context) error {
	st, err := w.vmState()
	if err != nil {
		return err
	}
	if !st.Running {
		return fmt.Errorf("the guest is not running: start it with `just arm-dev`")
	}
	ri, err := w.run()
	if err != nil {
		return err
	}
	return qemuvm.Attach(ctx, ri.Serial, w.In, w.Out)
}

// Status prints what the workspace is doing.
func (w *Workspace) Status(ctx context.Context) error {
	st, err := w.vmState()
	if err != nil {
		return err
	}
	ri, _ := w.run()
	if st.Running {
		w.say("guest:   running (pid %d)", st.PID)
		w.say("ssh:     127.0.0.1:%d as %s (`just arm-dev-ssh`)", ri.SSHPort, w.Cfg.User)
		w.say("accel:   %s, cpu %s", ri.Accel, ri.CPU)
	} else {
		w.say("guest:   stopped")
		w.say("ssh:     127.0.0.1:%d when running", w.Cfg.SSHPort)
	}
	w.say("share:   %s at /rsonpath", w.Cfg.Share)
	m, ok, err := w.meta()
	if err != nil {
		return err
	}
	if !ok {
		w.say("disk:    none yet (`just arm-dev-init`)")
		return nil
	}
	if alloc, err := disk.Allocated(w.p.disk()); err == nil {
		baseAlloc, _ := disk.Allocated(m.Base)
		w.say("disk:    %s: %s on the host (+ base %s)", w.p.disk(), progress.Bytes(alloc), progress.Bytes(baseAlloc))
	}
	w.say("image:   NixOS %s, Hydra build %d (%s)", m.Release, m.BuildID, m.Image)
	if m.Provisioned {
		w.say("state:   provisioned %s", m.ProvisionedAt.Local().Format(time.DateTime))
		changed, err := w.configChanged(m)
		if err != nil {
			return err
		}
		if changed {
			w.say("config:  share/etc/nixos changed since it was last applied: run `just arm-dev-update`")
		} else {
			w.say("config:  share/etc/nixos applied")
		}
	} else {
		w.say("state:   not provisioned yet (`just arm-dev-init`)")
	}
	return nil
}
