package instance

import (
	"context"
	"fmt"
	"time"

	"github.com/rsonpath/armdev/internal/qemuvm"
)

// VM is a handle on this workspace's QEMU: what identifies it (pid file,
// disk, name) and how to reach it (QMP and serial sockets).
type VM struct {
	PIDFile      string
	Disk         string
	Name         string
	QMPSocket    string
	SerialSocket string
	// DialMonitor connects to QMP; nil means qemuvm.DialMonitor. Tests fake it.
	DialMonitor qemuvm.MonitorDialer
}

// VM returns the handle on this workspace's QEMU, with the sockets the run
// record names (they may live in a short private folder).
func (l Layout) VM(rec RunRecord) VM {
	v := VM{PIDFile: l.PIDFile(), Disk: l.Disk(), Name: GuestName, QMPSocket: l.QMPSocket(), SerialSocket: l.SerialSocket()}
	if rec.QMP != "" {
		v.QMPSocket = rec.QMP
	}
	if rec.Serial != "" {
		v.SerialSocket = rec.Serial
	}
	return v
}

// Status tells whether the guest runs: through the pid file, else by
// looking for a QEMU named after us that runs our disk. It changes nothing.
func (v VM) Status() (qemuvm.State, error) {
	st, err := qemuvm.Inspect(v.PIDFile, v.Disk, v.Name)
	if err != nil {
		return st, fmt.Errorf("check the guest: %w", err)
	}
	return st, nil
}

// Kill stops the guest at once (SIGKILL), after checking that the process
// really is it; nothing else is ever signalled.
func (v VM) Kill(ctx context.Context) (qemuvm.KillResult, error) {
	return qemuvm.Kill(ctx, v.PIDFile, v.Disk, v.Name)
}

func (v VM) dial(ctx context.Context) (qemuvm.Monitor, error) {
	if v.DialMonitor != nil {
		return v.DialMonitor(ctx, v.QMPSocket)
	}
	return qemuvm.DialMonitor(ctx, v.QMPSocket)
}

// quitWait is how long QEMU gets to exit after QMP quit.
const quitWait = 10 * time.Second

// PowerOff stops the guest pid without SSH, escalating step by step: the
// power button (QMP system_powerdown) and up to wait for the guest to shut
// down, then QMP quit and up to ten seconds, then SIGKILL. Each step that
// does not work says so through say and falls through to the next, as Lima's
// shutdownQEMU does.
func (v VM) PowerOff(ctx context.Context, pid int, wait time.Duration, say func(string)) error {
	exited := func(d time.Duration) bool {
		wctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return qemuvm.WaitExit(wctx, pid) == nil
	}
	say("pressing the power button (QMP system_powerdown)")
	if err := v.monitor(ctx, func(m qemuvm.Monitor) error { return m.Powerdown(ctx) }); err != nil {
		say(fmt.Sprintf("the power button did not work (%v)", err))
	} else if exited(wait) {
		return nil
	} else {
		say(fmt.Sprintf("the guest did not power off within %s", wait))
	}
	say("asking QEMU to quit (QMP quit)")
	if err := v.monitor(ctx, func(m qemuvm.Monitor) error { return m.Quit(ctx) }); err != nil {
		say(fmt.Sprintf("QEMU did not quit (%v)", err))
	} else if exited(quitWait) {
		return nil
	} else {
		say(fmt.Sprintf("QEMU did not exit within %s", quitWait))
	}
	say("killing QEMU")
	if _, err := v.Kill(ctx); err != nil {
		return fmt.Errorf("kill QEMU: %w", err)
	}
	return nil
}

// monitor runs f on a fresh QMP connection.
func (v VM) monitor(ctx context.Context, f func(qemuvm.Monitor) error) error {
	m, err := v.dial(ctx)
	if err != nil {
		return err
	}
	defer m.Close()
	return f(m)
}
