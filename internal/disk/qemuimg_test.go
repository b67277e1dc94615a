package disk

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// qemuIO runs qemu-io commands on a qcow2 image; a failed command, such as
// a read whose pattern check fails, fails the test.
func qemuIO(t *testing.T, img string, cmds ...string) {
	t.Helper()
	qio, err := exec.LookPath("qemu-io")
	if err != nil {
		t.Skip("qemu-io not available")
	}
	args := []string{"-f", "qcow2"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.Command(qio, append(args, img)...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-io %v: %v\n%s", cmds, err, out)
	}
}

func TestOverlayAndSnapshots(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not available")
	}
	ctx := t.Context()
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.WriteFile("base.img", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate("base.img", 16<<20); err != nil {
		t.Fatal(err)
	}

	// A relative base is recorded as an absolute path.
	if err := CreateOverlay(ctx, "", "base.img", "disk.qcow2", 64<<20); err != nil {
		t.Fatal(err)
	}
	info, err := ImageInfo(ctx, "", "disk.qcow2")
	if err != nil {
		t.Fatal(err)
	}
	if info.Format != "qcow2" || info.VirtualSize != 64<<20 || info.BackingFile != filepath.Join(dir, "base.img") || len(info.Snapshots) != 0 || info.ActualSize <= 0 {
		t.Errorf("overlay info %+v", info)
	}
	if left := leftovers(t, dir, "base.img", "disk.qcow2"); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}

	// Snapshot, write, revert: the write is gone.
	if err := Snapshot(ctx, "", "disk.qcow2", "clean"); err != nil {
		t.Fatal(err)
	}
	qemuIO(t, "disk.qcow2", "write -P 0xab 0 64k")
	qemuIO(t, "disk.qcow2", "read -P 0xab 0 64k") // the write landed
	if err := RevertSnapshot(ctx, "", "disk.qcow2", "clean"); err != nil {
		t.Fatal(err)
	}
	qemuIO(t, "disk.qcow2", "read -P 0 0 64k") // the write is gone

	// Snapshot replaces a snapshot of the same name.
	if err := Snapshot(ctx, "", "disk.qcow2", "clean"); err != nil {
		t.Fatal(err)
	}
	info, err = ImageInfo(ctx, "", "disk.qcow2")
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Snapshots) != 1 || info.Snapshots[0] != "clean" {
		t.Errorf("snapshots %v, want [clean]", info.Snapshots)
	}
	if has, err := HasSnapshot(ctx, "", "disk.qcow2", "clean"); err != nil || !has {
		t.Errorf("HasSnapshot(clean) = %v, %v", has, err)
	}
	if has, err := HasSnapshot(ctx, "", "disk.qcow2", "other"); err != nil || has {
		t.Errorf("HasSnapshot(other) = %v, %v", has, err)
	}
	if err := RevertSnapshot(ctx, "", "disk.qcow2", "other"); err == nil {
		t.Error("revert to a missing snapshot: no error")
	}
	if err := DeleteSnapshot(ctx, "", "disk.qcow2", "clean"); err != nil {
		t.Fatal(err)
	}
	if has, err := HasSnapshot(ctx, "", "disk.qcow2", "clean"); err != nil || has {
		t.Errorf("after delete: HasSnapshot(clean) = %v, %v", has, err)
	}

	// Size 0 takes the base's size; a missing base leaves nothing behind.
	if err := CreateOverlay(ctx, "", "base.img", "same.qcow2", 0); err != nil {
		t.Fatal(err)
	}
	if info, err := ImageInfo(ctx, "", "same.qcow2"); err != nil || info.VirtualSize != 16<<20 {
		t.Errorf("overlay of base size: %+v, %v", info, err)
	}
	if err := CreateOverlay(ctx, "", "missing.img", "bad.qcow2", 0); err == nil {
		t.Error("overlay of a missing base: no error")
	}
	if left := leftovers(t, dir, "base.img", "disk.qcow2", "same.qcow2"); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

func TestAllocated(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sparse")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 1<<20), 0); err != nil { // zeros written: allocated
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := Allocated(p)
	if err != nil {
		t.Fatal(err)
	}
	if got < 1<<20 || got >= 8<<20 {
		t.Errorf("allocated %d bytes, want about 1 MiB", got)
	}
	if _, err := Allocated(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Error("missing file: no error")
	}
}

// BackingChain names the files a disk reads, whatever path spelling made it,
// and refuses to guess when a link is missing.
func TestBackingChain(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not available")
	}
	ctx := t.Context()
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(link, "base.img")
	if err := os.WriteFile(base, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(real, "disk.qcow2")
	if err := CreateOverlay(ctx, "", base, disk, 0); err != nil {
		t.Fatal(err)
	}
	chain, err := BackingChain(ctx, "", disk)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 2 {
		t.Fatalf("chain %q, want the disk and its base", chain)
	}
	same := func(a, b string) bool {
		sa, errA := os.Stat(a)
		sb, errB := os.Stat(b)
		return errA == nil && errB == nil && os.SameFile(sa, sb)
	}
	if !same(chain[0], disk) || !same(chain[1], filepath.Join(real, "base.img")) {
		t.Errorf("chain %q: want %s and the base (through any spelling)", chain, disk)
	}
	if err := os.Remove(base); err != nil {
		t.Fatal(err)
	}
	if chain, err := BackingChain(ctx, "", disk); err == nil {
		t.Errorf("a chain with a missing base = %q, want an error", chain)
	}
}
