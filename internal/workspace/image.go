package workspace

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/magefile/mage/target"

	"github.com/rsonpath/armdev/internal/config"
	"github.com/rsonpath/armdev/internal/disk"
	"github.com/rsonpath/armdev/internal/fetch"
	"github.com/rsonpath/armdev/internal/guestssh"
	"github.com/rsonpath/armdev/internal/instance"
	"github.com/rsonpath/armdev/internal/progress"
	"github.com/rsonpath/armdev/internal/stamp"
)

// Image runs the image pipeline up to a working disk, without booting it:
// resolve the Hydra build (once, then pinned in the lock), download and
// verify it, find u-boot, decompress and inject into a content-addressed
// base, and put the working overlay on top. Each step is skipped when its
// inputs did not change (timestamps first, content second).
func (w *Workspace) Image(ctx context.Context) error {
	lk, err := w.lock(ctx, "image")
	if err != nil {
		return err
	}
	defer lk.Release()
	if err := w.requireTools(w.Cfg.QEMUImg); err != nil {
		return err
	}
	key, err := guestssh.EnsureKey(w.l.SSHDir())
	if err != nil {
		return err
	}
	lock, err := w.resolve(ctx)
	if err != nil {
		return err
	}
	// The image is larger than its compressed download: a smaller disk is
	// refused before anything is downloaded.
	if err := w.checkDiskSize(lock.Size, "more than its download's"); err != nil {
		return err
	}
	zst, err := w.download(ctx, lock)
	if err != nil {
		return err
	}
	if size, known, err := disk.ZstdMinSize(zst); err == nil && known {
		if err := w.checkDiskSize(size, ""); err != nil {
			return err
		}
	}
	if _, err := w.ubootPath(ctx); err != nil {
		return err
	}
	initDigest, err := w.initDigest()
	if err != nil {
		return err
	}
	baseKey := baseKeyOf(lock.SHA256, initDigest, key.AuthorizedKey)
	if err := w.base(ctx, zst, baseKey, key.AuthorizedKey); err != nil {
		return err
	}
	if err := w.workingDisk(ctx, lock, baseKey); err != nil {
		return err
	}
	return w.configNotice()
}

// checkDiskSize refuses an ARMDEV_DISK_SIZE below imageSize, the image's
// size, or a lower bound of it (what then says so, as in "more than its
// download's").
func (w *Workspace) checkDiskSize(imageSize int64, what string) error {
	if w.Cfg.DiskSize == 0 || w.Cfg.DiskSize >= imageSize {
		return nil
	}
	if what != "" {
		what += " "
	}
	return fmt.Errorf("ARMDEV_DISK_SIZE=%s is smaller than the image (%s%s): set it to at least %dG, or unset it for the image's size + %s",
		progress.Bytes(w.Cfg.DiskSize), what, progress.Bytes(imageSize), (imageSize+(1<<30)-1)>>30, progress.Bytes(config.DefaultDiskGrowth))
}

// baseKeyOf names a prepared base after everything that goes into it.
func baseKeyOf(imageSHA, initDigest, authorizedKey string) string {
	h := sha256.New()
	fmt.Fprintf(h, "image %s\ninit %s\nkey %s\n", imageSHA, initDigest, authorizedKey)
	return hex.EncodeToString(h.Sum(nil))[:20]
}

// resolve returns the pinned build, resolving Hydra's "latest" only when
// there is no lock or it was made for another release or Hydra.
func (w *Workspace) resolve(ctx context.Context) (fetch.Lock, error) {
	lock, err := fetch.ReadLock(w.l.HydraLock())
	switch {
	case err == nil && lock.Release == w.Cfg.Release && strings.HasPrefix(lock.URL, w.Cfg.HydraURL+"/"):
		return lock, nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return fetch.Lock{}, err
	}
	w.say("resolving the newest NixOS %s aarch64 SD image on %s", w.Cfg.Release, w.Cfg.HydraURL)
	h := fetch.Hydra{BaseURL: w.Cfg.HydraURL, Client: &http.Client{Timeout: 60 * time.Second}}
	lock, err = h.Resolve(ctx, w.Cfg.Release)
	if err != nil {
		return fetch.Lock{}, err
	}
	if err := fetch.WriteLock(w.l.HydraLock(), lock); err != nil {
		return fetch.Lock{}, err
	}
	w.say("pinned Hydra build %d: %s (%s)", lock.BuildID, lock.FileName, progress.Bytes(lock.Size))
	return lock, nil
}

// download makes sure the locked image is present and verified. A verified
// file has a stamp holding its sha256, newer than the file: then nothing is
// read and no request is made.
func (w *Workspace) download(ctx context.Context, lock fetch.Lock) (string, error) {
	dest := w.downloadPath(lock)
	st := stamp.Stamp{Path: dest + ".verified", Inputs: []string{dest}}
	if _, err := os.Stat(dest); err == nil {
		if recorded, err := os.ReadFile(st.Path); err == nil && string(recorded) == lock.SHA256+"\n" {
			if newer, err := target.Path(st.Path, dest); err == nil && !newer {
				return dest, nil
			}
		}
		if err := fetch.Verify(dest, lock.Size, lock.SHA256); err == nil {
			return dest, st.Record(lock.SHA256)
		}
	}
	if err := os.MkdirAll(w.l.Downloads(), 0o755); err != nil {
		return "", fmt.Errorf("download: %w", err)
	}
	w.say("downloading %s (%s)", lock.FileName, progress.Bytes(lock.Size))
	err := fetch.Download(ctx, lock, dest, fetch.DownloadOptions{Progress: w.Err, Terminal: isTerminal(w.Err)})
	if err != nil {
		return "", err
	}
	return dest, st.Record(lock.SHA256)
}

// downloadPath is where the locked image is downloaded to.
func (w *Workspace) downloadPath(lock fetch.Lock) string {
	return filepath.Join(w.l.Downloads(), fmt.Sprintf("%d-%s", lock.BuildID, lock.FileName))
}

// ubootPath returns the u-boot.bin to boot with: ARMDEV_UBOOT, else an
// earlier nix build's copy in the state dir, else a new nix build, else
// Debian's u-boot-qemu.
func (w *Workspace) ubootPath(ctx context.Context) (string, error) {
	path, err := fetch.FindUBoot(ctx, fetch.UBootOptions{Explicit: w.Cfg.UBoot, StateDir: w.Cfg.StateDir})
	if err != nil {
		return "", fmt.Errorf("u-boot: %w", err)
	}
	return path, nil
}

// initDigest is the content digest of init/, cached in a stamp.
func (w *Workspace) initDigest() (string, error) {
	return stamp.Stamp{Path: w.l.Stamp("init"), Inputs: []string{w.Cfg.InitDir}}.Current()
}

// base prepares bases/<key>.img: the image decompressed, sparse, with init/
// and the workspace key laid onto its root partition. Each run works on a
// partial file of its own and renames it into place only when complete.
func (w *Workspace) base(ctx context.Context, zst, key, authorizedKey string) error {
	final := w.l.Base(key)
	if _, err := os.Stat(final); err == nil {
		return nil
	}
	if err := os.MkdirAll(w.l.Bases(), 0o755); err != nil {
		return fmt.Errorf("prepare base: %w", err)
	}
	tmp, err := os.CreateTemp(w.l.Bases(), key+".img.partial-*")
	if err != nil {
		return fmt.Errorf("prepare base: %w", err)
	}
	partial := tmp.Name()
	tmp.Close()
	defer os.Remove(partial)
	w.say("decompressing %s", filepath.Base(zst))
	prog := newProgress(w.Err, "decompress", isTerminal(w.Err))
	if err := disk.DecompressZstd(ctx, zst, partial, prog.update); err != nil {
		return fmt.Errorf("prepare base: %w", err)
	}
	prog.done()
	root, err := disk.RootPartition(partial)
	if err != nil {
		return fmt.Errorf("prepare base: %w", err)
	}
	files, err := disk.TreeFiles(w.Cfg.InitDir, "/")
	if err != nil {
		return fmt.Errorf("prepare base: %w", err)
	}
	keyLine := []byte(authorizedKey + "\n")
	files = append(files,
		disk.File{GuestPath: "/root", Dir: true, Mode: 0o700},
		disk.File{GuestPath: "/root/.ssh", Dir: true, Mode: 0o700},
		disk.File{GuestPath: "/root/.ssh/authorized_keys", Data: keyLine, Mode: 0o600},
		disk.File{GuestPath: "/etc/ssh/authorized_keys.d/root", Data: keyLine, Mode: 0o600},
	)
	w.say("laying init/ and the workspace key onto the root partition (offset %d)", root.Start)
	if err := disk.Inject(ctx, partial, root.Start, files); err != nil {
		return fmt.Errorf("prepare base: %w", err)
	}
	if err := os.Rename(partial, final); err != nil {
		return fmt.Errorf("prepare base: %w", err)
	}
	return nil
}

// workingDisk makes disk.qcow2 on top of the base, with a "fresh" snapshot
// every provisioning attempt starts from. An existing disk on another base,
// or one whose metadata is unreadable, is only replaced with a yes, and kept
// as a dated backup.
func (w *Workspace) workingDisk(ctx context.Context, lock fetch.Lock, baseKey string) error {
	wd, err := w.l.LoadDisk()
	if err != nil {
		return err
	}
	switch wd.State {
	case instance.KnownDisk:
		if wd.Meta.BaseKey == baseKey {
			return nil
		}
		if err := w.replaceDisk("The prepared image changed (new image or edits in init/).", "the prepared image changed, but a working disk exists"); err != nil {
			return err
		}
	case instance.UnknownDisk:
		w.warn("the working disk's metadata is unreadable: %v", wd.MetaErr)
		if err := w.replaceDisk("The working disk has no readable metadata (disk.json), so armdev cannot tell what it holds.", "the working disk has no readable metadata"); err != nil {
			return err
		}
	}
	size := w.Cfg.DiskSize
	info, err := disk.ImageInfo(ctx, w.Cfg.QEMUImg, w.l.Base(baseKey))
	if err != nil {
		return fmt.Errorf("working disk: %w", err)
	}
	if size == 0 {
		size = info.VirtualSize + config.DefaultDiskGrowth
	}
	if err := w.checkDiskSize(info.VirtualSize, ""); err != nil {
		return err
	}
	if err := disk.CreateOverlay(ctx, w.Cfg.QEMUImg, w.l.Base(baseKey), w.l.Disk(), size); err != nil {
		return fmt.Errorf("working disk: %w", err)
	}
	if err := disk.Snapshot(ctx, w.Cfg.QEMUImg, w.l.Disk(), instance.FreshSnapshot); err != nil {
		return fmt.Errorf("working disk: %w", err)
	}
	w.say("working disk %s: %s over base %s", w.l.Disk(), progress.Bytes(size), baseKey)
	return w.l.SaveDisk(instance.DiskMeta{
		BaseKey: baseKey, Base: w.l.Base(baseKey), Release: lock.Release, BuildID: lock.BuildID,
		Image: lock.FileName, Created: w.Now().UTC(), RepinHostKey: true,
	})
}

// replaceDisk asks before a new disk replaces the existing one, then moves
// the old one to backups/.
func (w *Workspace) replaceDisk(why, refused string) error {
	if st, _ := w.vm().Status(); st.Running {
		return fmt.Errorf("%s, and the guest is running on it: stop it (`just arm-dev-shutdown`) and run this again", refused)
	}
	ok, err := w.confirm(why + " Replace the working disk? The old one is kept as a dated backup.")
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s: run again with ARMDEV_YES=1 (or answer yes on a terminal) to replace it; the old disk will be kept as a dated backup", refused)
	}
	backup, err := w.backupDisk()
	if err != nil {
		return err
	}
	w.say("kept the old disk as %s", backup)
	return nil
}

// backupDisk moves the working disk and its metadata to backups/.
func (w *Workspace) backupDisk() (string, error) {
	if err := os.MkdirAll(w.l.Backups(), 0o755); err != nil {
		return "", fmt.Errorf("back up disk: %w", err)
	}
	name := "disk-" + w.Now().Format("20060102-150405")
	dst := filepath.Join(w.l.Backups(), name+".qcow2")
	for i := 2; exists(dst); i++ { // never overwrite an earlier backup
		name = fmt.Sprintf("disk-%s-%d", w.Now().Format("20060102-150405"), i)
		dst = filepath.Join(w.l.Backups(), name+".qcow2")
	}
	if err := os.Rename(w.l.Disk(), dst); err != nil {
		return "", fmt.Errorf("back up disk: %w", err)
	}
	// The metadata goes along when there is some.
	if err := os.Rename(w.l.DiskMeta(), filepath.Join(w.l.Backups(), name+".json")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("back up disk: %w", err)
	}
	return dst, nil
}

// configNotice says when share/etc/nixos changed since it was last applied:
// those edits never rebuild the disk, `arm-dev-update` applies them.
func (w *Workspace) configNotice() error {
	wd, err := w.l.LoadDisk()
	if err != nil || wd.State != instance.KnownDisk || !wd.Meta.Provisioned {
		return err
	}
	changed, err := w.configChanged(wd.Meta)
	if err != nil {
		return err
	}
	if changed {
		w.say("configuration changed: run `just arm-dev-update`")
	}
	return nil
}

// configChanged compares share/etc/nixos and the workspace's identity with
// what was last applied.
func (w *Workspace) configChanged(m instance.DiskMeta) (bool, error) {
	_, identity, err := w.identity(m)
	if err != nil {
		return false, err
	}
	digest, err := w.appliedDigest(identity)
	if err != nil {
		return false, err
	}
	return digest != m.AppliedConfig, nil
}

// appliedDigest is what a switch applies: the content of share/etc/nixos
// (cached in a stamp) and the identity uploaded with it.
func (w *Workspace) appliedDigest(identity []byte) (string, error) {
	config, err := stamp.Stamp{Path: w.l.Stamp("nixos-config"), Inputs: []string{w.Cfg.NixOSConfig}}.Current()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "config %s\nidentity %d\n", config, len(identity))
	h.Write(identity)
	return hex.EncodeToString(h.Sum(nil)), nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
