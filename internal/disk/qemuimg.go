package disk

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Info is what qemu-img reports about a disk image.
type Info struct {
	// Format is the image format, e.g. "qcow2" or "raw".
	Format string
	// VirtualSize is the size of the disk the guest sees, in bytes.
	VirtualSize int64
	// ActualSize is the space the image file takes on the host, in bytes.
	ActualSize int64
	// BackingFile is the backing image of an overlay, or empty.
	BackingFile string
	// Snapshots are the names of the image's internal snapshots.
	Snapshots []string
}

// runQemuImg runs qemu-img (qemuImg, or the one on PATH if empty) and
// returns its stdout; errors carry its stderr, with a hint when the image is
// locked by a running QEMU.
func runQemuImg(ctx context.Context, qemuImg string, args ...string) ([]byte, error) {
	if qemuImg == "" {
		qemuImg = "qemu-img"
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, qemuImg, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		msg := strings.TrimSpace(stderr.String())
		if strings.Contains(msg, "lock") {
			return nil, fmt.Errorf("qemu-img %s: %s: the disk is in use: stop the guest first", args[0], msg)
		}
		return nil, fmt.Errorf("qemu-img %s: %w: %s", args[0], err, msg)
	}
	return stdout.Bytes(), nil
}

// CreateOverlay creates the qcow2 image overlay backed by the raw image base
// with a virtual size of size bytes (base's size if size is 0). The overlay
// is created under a temporary name and renamed into place, so overlay
// exists only when complete. It records base's absolute path.
func CreateOverlay(ctx context.Context, qemuImg, base, overlay string, size int64) (err error) {
	absBase, err := filepath.Abs(base)
	if err != nil {
		return fmt.Errorf("create overlay %s: %w", overlay, err)
	}
	if _, err := os.Stat(absBase); err != nil {
		return fmt.Errorf("create overlay %s: backing image: %w", overlay, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(overlay), "."+filepath.Base(overlay)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create overlay %s: %w", overlay, err)
	}
	_ = tmp.Close()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	args := []string{"create", "-q", "-f", "qcow2", "-F", "raw", "-b", absBase, tmp.Name()}
	if size > 0 {
		args = append(args, strconv.FormatInt(size, 10))
	}
	if _, err := runQemuImg(ctx, qemuImg, args...); err != nil {
		return fmt.Errorf("create overlay %s: %w", overlay, err)
	}
	if err := os.Rename(tmp.Name(), overlay); err != nil {
		return fmt.Errorf("create overlay %s: %w", overlay, err)
	}
	return nil
}

// ImageInfo describes the disk image at path. It shares the image
// (qemu-img -U), so it works while QEMU runs.
func ImageInfo(ctx context.Context, qemuImg, path string) (Info, error) {
	out, err := runQemuImg(ctx, qemuImg, "info", "-U", "--output=json", path)
	if err != nil {
		return Info{}, fmt.Errorf("inspect %s: %w", path, err)
	}
	var raw struct {
		Format              string `json:"format"`
		VirtualSize         int64  `json:"virtual-size"`
		ActualSize          int64  `json:"actual-size"`
		BackingFilename     string `json:"backing-filename"`
		FullBackingFilename string `json:"full-backing-filename"`
		Snapshots           []struct {
			Name string `json:"name"`
		} `json:"snapshots"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return Info{}, fmt.Errorf("inspect %s: qemu-img info: %w", path, err)
	}
	info := Info{
		Format:      raw.Format,
		VirtualSize: raw.VirtualSize,
		ActualSize:  raw.ActualSize,
		BackingFile: raw.FullBackingFilename,
	}
	if info.BackingFile == "" {
		info.BackingFile = raw.BackingFilename
	}
	for _, s := range raw.Snapshots {
		info.Snapshots = append(info.Snapshots, s.Name)
	}
	return info, nil
}

// BackingChain lists the files the image at path reads from: path itself,
// then its backing file, that file's backing file, and so on, as
// `qemu-img info --backing-chain` reports them (relative backing names are
// resolved by qemu-img). It fails when any link of the chain cannot be
// opened, so that nothing is ever judged unused by guesswork.
func BackingChain(ctx context.Context, qemuImg, path string) ([]string, error) {
	out, err := runQemuImg(ctx, qemuImg, "info", "-U", "--backing-chain", "--output=json", path)
	if err != nil {
		return nil, fmt.Errorf("read the backing chain of %s: %w", path, err)
	}
	var chain []struct {
		Filename string `json:"filename"`
	}
	if err := json.Unmarshal(out, &chain); err != nil {
		return nil, fmt.Errorf("read the backing chain of %s: qemu-img info: %w", path, err)
	}
	files := make([]string, 0, len(chain))
	for _, c := range chain {
		files = append(files, c.Filename)
	}
	return files, nil
}

// HasSnapshot reports whether the qcow2 image disk has a snapshot called name.
func HasSnapshot(ctx context.Context, qemuImg, disk, name string) (bool, error) {
	info, err := ImageInfo(ctx, qemuImg, disk)
	if err != nil {
		return false, err
	}
	return slices.Contains(info.Snapshots, name), nil
}

// Snapshot saves the state of the qcow2 image disk as the snapshot name,
// replacing any snapshot of that name. The guest must be stopped.
func Snapshot(ctx context.Context, qemuImg, disk, name string) error {
	has, err := HasSnapshot(ctx, qemuImg, disk, name)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", disk, err)
	}
	if has {
		if err := DeleteSnapshot(ctx, qemuImg, disk, name); err != nil {
			return fmt.Errorf("snapshot %s: %w", disk, err)
		}
	}
	if _, err := runQemuImg(ctx, qemuImg, "snapshot", "-c", name, disk); err != nil {
		return fmt.Errorf("snapshot %s as %q: %w", disk, name, err)
	}
	return nil
}

// RevertSnapshot brings the qcow2 image disk back to the snapshot name. The
// guest must be stopped.
func RevertSnapshot(ctx context.Context, qemuImg, disk, name string) error {
	if _, err := runQemuImg(ctx, qemuImg, "snapshot", "-a", name, disk); err != nil {
		return fmt.Errorf("revert %s to snapshot %q: %w", disk, name, err)
	}
	return nil
}

// DeleteSnapshot removes the snapshot name from the qcow2 image disk. The
// guest must be stopped.
func DeleteSnapshot(ctx context.Context, qemuImg, disk, name string) error {
	if _, err := runQemuImg(ctx, qemuImg, "snapshot", "-d", name, disk); err != nil {
		return fmt.Errorf("delete snapshot %q of %s: %w", name, disk, err)
	}
	return nil
}
