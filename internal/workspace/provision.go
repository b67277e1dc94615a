package workspace

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/rsonpath/armdev/internal/atomicfile"
	"github.com/rsonpath/armdev/internal/disk"
	"github.com/rsonpath/armdev/internal/guestssh"
	"github.com/rsonpath/armdev/internal/guestuser"
	"github.com/rsonpath/armdev/internal/instance"
	"github.com/rsonpath/armdev/internal/qemuvm"
)

// provisionScript is init/'s provisioning script as laid onto the image.
const provisionScript = "/root/armdev-provision.sh"

// guestIdentity is where the guest's configuration reads the workspace's
// identity (share/etc/nixos/configuration.nix: ../armdev/identity.nix).
const guestIdentity = "/etc/armdev/identity.nix"

// uploadIdentity writes stdin to guestIdentity atomically, readable by all.
const uploadIdentity = "set -e; mkdir -p /etc/armdev; t=" + guestIdentity + ".new; cat > \"$t\"; chmod 0644 \"$t\"; mv -f \"$t\" " + guestIdentity

// Provision is the end of init: boot the fresh disk, upload the workspace's
// identity, run init/'s provisioning script as root over SSH, power off and
// snapshot the result as "provisioned". Every attempt starts from the
// "fresh" snapshot, so that a retry is a true first boot (the failed
// attempt may already have turned root login off). A failure keeps the
// disk for inspection; a rerun tries again.
func (w *Workspace) Provision(ctx context.Context) error {
	lk, err := w.lock(ctx, "init")
	if err != nil {
		return err
	}
	defer lk.Release()
	wd, err := w.l.LoadDisk()
	if err != nil {
		return err
	}
	switch wd.State {
	case instance.NoDisk:
		return fmt.Errorf("there is no working disk: run `just arm-dev-init`")
	case instance.UnknownDisk:
		return w.unknownDiskError(wd)
	}
	m := wd.Meta
	if m.Provisioned {
		w.say("the disk is provisioned: `just arm-dev` starts it")
		return nil
	}
	if st, err := w.vm().Status(); err != nil {
		return err
	} else if st.Running {
		return fmt.Errorf("the guest is running on the unprovisioned disk: stop it (`just arm-dev-kill`) and run `just arm-dev-init` again")
	}
	if err := w.requireTools(w.Cfg.QEMUImg); err != nil {
		return err
	}
	fresh, err := disk.HasSnapshot(ctx, w.Cfg.QEMUImg, w.l.Disk(), instance.FreshSnapshot)
	if err != nil {
		return err
	}
	if fresh {
		if err := disk.RevertSnapshot(ctx, w.Cfg.QEMUImg, w.l.Disk(), instance.FreshSnapshot); err != nil {
			return err
		}
		m.RepinHostKey = true // a first boot makes new host keys
		if err := w.l.SaveDisk(m); err != nil {
			return err
		}
	} else {
		w.warn("this disk has no %q snapshot (made by an older armdev): provisioning boots it as the last attempt left it", instance.FreshSnapshot)
	}
	id, identity, err := w.identity(m)
	if err != nil {
		return err
	}
	for _, note := range id.Notes {
		w.warn("note: %s", note)
	}
	digest, err := w.appliedDigest(identity)
	if err != nil {
		return err
	}

	w.say("first boot: provisioning the guest (log: %s)", w.l.ProvisionLog())
	c, rec, err := w.boot(ctx, "root", m.RepinHostKey)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(w.l.LogsDir(), 0o755); err != nil {
		c.Close()
		return err
	}
	logf, err := os.OpenFile(w.l.ProvisionLog(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.Close()
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== provisioning %s\n", w.Now().UTC().Format(time.RFC3339))
	out, errOut := io.MultiWriter(w.Out, logf), io.MultiWriter(w.Err, logf)
	runErr := w.runProvisioning(ctx, c, identity, out, errOut)
	// Power off over the connection that is already root's: the new
	// configuration refuses new root logins.
	offErr := w.powerOff(ctx, rec, c, "poweroff")
	if runErr != nil {
		fmt.Fprintf(logf, "=== failed: %v\n", runErr)
		return fmt.Errorf("provisioning failed (%v): see %s; the disk is kept for inspection, and `just arm-dev-init` tries again from the fresh disk", runErr, w.l.ProvisionLog())
	}
	if offErr != nil {
		return fmt.Errorf("power off after provisioning: %w", offErr)
	}
	if err := disk.Snapshot(ctx, w.Cfg.QEMUImg, w.l.Disk(), instance.ProvisionedSnapshot); err != nil {
		return err
	}
	m.Provisioned, m.ProvisionedAt, m.RepinHostKey = true, w.Now().UTC(), false
	if err := w.applied(m, id, digest, identity); err != nil {
		return err
	}
	w.say("provisioned: `just arm-dev` starts the guest, `just arm-dev-ssh` logs in")
	return nil
}

// applied records that the guest runs the configuration of digest with
// identity id: in the disk's metadata, and the identity's copy in the state
// folder.
func (w *Workspace) applied(m instance.DiskMeta, id guestuser.Identity, digest string, identity []byte) error {
	m.AppliedConfig, m.GuestUser = digest, id.User
	if err := w.l.SaveDisk(m); err != nil {
		return err
	}
	return atomicfile.WriteFile(w.l.Identity(), identity, 0o644)
}

// runProvisioning uploads the identity and runs the provisioning script as
// root, with its output live.
func (w *Workspace) runProvisioning(ctx context.Context, c guestssh.Runner, identity []byte, out, errOut io.Writer) error {
	if err := runChecked(ctx, c, "upload the identity", uploadIdentity, identity, out, errOut); err != nil {
		return err
	}
	return runChecked(ctx, c, "the provisioning script", "sh "+provisionScript, nil, out, errOut)
}

// runChecked runs cmd and turns a failure or a non-zero exit into an error
// naming what.
func runChecked(ctx context.Context, c guestssh.Runner, what, cmd string, stdin []byte, out, errOut io.Writer) error {
	var in io.Reader
	if stdin != nil {
		in = strings.NewReader(string(stdin))
	}
	code, err := c.Run(ctx, cmd, in, out, errOut)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if code != 0 {
		return fmt.Errorf("%s exited with status %d", what, code)
	}
	return nil
}

// releaseRE finds a NixOS release number in an image's file name, such as
// nixos-image-sd-card-26.05.20260601.abcdef0-aarch64-linux.img.zst.
var releaseRE = regexp.MustCompile(`(?:^|[^0-9.])([0-9]{2}\.[0-9]{2})(?:[^0-9]|$)`)

// stateVersion is the release the disk's image was built from, for
// system.stateVersion: read from the image's name (so "unstable" becomes
// the number it really was), else the configured release.
func stateVersion(m instance.DiskMeta) string {
	if v := releaseRE.FindStringSubmatch(m.Image); v != nil {
		return v[1]
	}
	return m.Release
}

// identity is how this workspace's user is declared in the guest, and the
// identity.nix that carries it there (see guestuser).
func (w *Workspace) identity(m instance.DiskMeta) (guestuser.Identity, []byte, error) {
	key, err := guestssh.EnsureKey(w.l.SSHDir())
	if err != nil {
		return guestuser.Identity{}, nil, err
	}
	uid, gid := w.hostID()
	id := guestuser.For(uid, gid, w.Cfg.User)
	return id, guestuser.Render(id, stateVersion(m), []string{key.AuthorizedKey}), nil
}

// authHint says why the guest refused the workspace key for user, and what
// to do.
func (w *Workspace) authHint(user string) string {
	if user == "root" {
		return "root may log in only on the stock image's first boot; run `just arm-dev-init` to provision again from the fresh disk, or `just arm-dev-reset` for a provisioned one"
	}
	return fmt.Sprintf("the disk has no user %q with this workspace's key (%s): was the key replaced since provisioning? Restore it, or run `just arm-dev-init`, which makes a new disk for the new key and keeps this one as a backup",
		user, filepath.Join(w.l.SSHDir(), "id_ed25519"))
}

// powerOff shuts the VM of rec down: poweroff over the SSH runner c when
// there is one (closing it), else or if that does not work within
// ARMDEV_SHUTDOWN_TIMEOUT, the power button, quit and SIGKILL.
func (w *Workspace) powerOff(ctx context.Context, rec instance.RunRecord, c guestssh.Runner, poweroff string) error {
	if c != nil {
		w.say("asking the guest to power off over SSH")
		// The connection drops as the guest goes down; that is expected.
		_, _ = c.Run(ctx, poweroff, nil, nil, nil)
		c.Close()
		wctx, cancel := context.WithTimeout(ctx, w.Cfg.ShutdownTimeout)
		err := qemuvm.WaitExit(wctx, rec.PID)
		cancel()
		if err == nil {
			return w.stopped()
		}
		w.say("the guest did not power off within %s", w.Cfg.ShutdownTimeout)
	}
	vm := w.vm()
	if err := vm.PowerOff(ctx, rec.PID, w.Cfg.ShutdownTimeout, func(s string) { w.say("%s", s) }); err != nil {
		return err
	}
	return w.stopped()
}

// stopped cleans up after QEMU exited: the run record, and a pid file no
// live process holds any more.
func (w *Workspace) stopped() error {
	st, err := w.vm().Status()
	if err == nil && st.Stale {
		if err := qemuvm.RemoveStalePIDFile(w.l.PIDFile(), st); err != nil {
			w.warn("%v", err)
		}
	}
	if err := w.l.ClearRun(); err != nil {
		return err
	}
	w.say("the guest is off")
	return nil
}
