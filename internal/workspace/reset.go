package workspace

import (
	"context"
	"fmt"
	"time"

	"github.com/rsonpath/armdev/internal/disk"
	"github.com/rsonpath/armdev/internal/instance"
	"github.com/rsonpath/armdev/internal/progress"
)

// Reset returns the working disk to the "provisioned" snapshot, after a
// yes: everything done in the guest since then is discarded.
func (w *Workspace) Reset(ctx context.Context) error {
	lk, err := w.lock(ctx, "reset")
	if err != nil {
		return err
	}
	defer lk.Release()
	m, err := w.provisioned()
	if err != nil {
		return fmt.Errorf("nothing to reset to: %w", err)
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
	if st, err := w.vm().Status(); err != nil {
		return err
	} else if st.Running {
		w.say("stopping the guest first")
		if err := w.kill(ctx); err != nil {
			return err
		}
	}
	before, _ := disk.Allocated(w.l.Disk())
	if err := disk.RevertSnapshot(ctx, w.Cfg.QEMUImg, w.l.Disk(), instance.ProvisionedSnapshot); err != nil {
		return err
	}
	m.RepinHostKey = true
	if err := w.l.SaveDisk(m); err != nil {
		return err
	}
	w.say("reset to the state provisioned on %s: discarded every change made in the guest since then (the disk file held %s)", m.ProvisionedAt.Local().Format(time.DateTime), progress.Bytes(before))
	return nil
}
