package workspace

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rsonpath/armdev/internal/config"
	"github.com/rsonpath/armdev/internal/disk"
	"github.com/rsonpath/armdev/internal/fakehydra"

	"github.com/rsonpath/armdev/internal/instance"
)

// sdImageZst builds a small image laid out like the NixOS SD image (MBR,
// FAT at 8 MiB, ext4 NIXOS_SD at 38 MiB) and returns it zstd-compressed.
func sdImageZst(t *testing.T, label string) []byte {
	t.Helper()
	tool := map[string]string{}
	for _, name := range []string{"sfdisk", "mke2fs", "zstd", "debugfs", "qemu-img"} {
		p, err := disk.LookTool(name)
		if err != nil {
			t.Skipf("%s not available", name)
		}
		tool[name] = p
	}
	img := filepath.Join(t.TempDir(), "sd.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tool["sfdisk"], "--quiet", img)
	cmd.Stdin = strings.NewReader("label: dos\nstart=16384, size=61440, type=c\nstart=77824, type=83\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	if out, err := exec.Command(tool["mke2fs"], "-q", "-F", "-t", "ext4", "-L", "NIXOS_SD", "-U", "clear",
		"-E", "offset=39845888", img, fmt.Sprintf("%dk", (64-38)<<10)).CombinedOutput(); err != nil {
		t.Fatalf("mke2fs: %v\n%s", err, out)
	}
	// make two images differ in content, not just in name
	if out, err := exec.Command(tool["debugfs"], "-w", "-R", "mkdir /"+label, img+"?offset=39845888").CombinedOutput(); err != nil {
		t.Fatalf("debugfs: %v\n%s", err, out)
	}
	out, err := exec.Command(tool["zstd"], "-q", "-c", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type fixture struct {
	t     *testing.T
	root  string
	hydra *fakehydra.Server
	env   map[string]string
	out   bytes.Buffer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, root: t.TempDir(), hydra: fakehydra.NewServer()}
	t.Cleanup(f.hydra.Close)
	f.hydra.AddBuild("26.05", "nixos-image-sd-card-26.05-aarch64-linux.img.zst", sdImageZst(t, "first"))
	f.write("init/root/armdev-provision.sh", "#!/bin/sh\necho provision\n", 0o755)
	f.write("init/etc/armdev-note", "hello\n", 0o644)
	f.write("share/etc/nixos/configuration.nix", "{ ... }: { }\n", 0o644)
	uboot := f.write("u-boot.bin", "not really u-boot", 0o644)
	f.env = map[string]string{
		"ARMDEV_HYDRA_URL":     f.hydra.URL(),
		"ARMDEV_NIXOS_RELEASE": "26.05",
		"ARMDEV_UBOOT":         uboot,
		"ARMDEV_DISK_SIZE":     "1G",
	}
	return f
}

func (f *fixture) write(rel, content string, mode os.FileMode) string {
	f.t.Helper()
	path := filepath.Join(f.root, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		f.t.Fatal(err)
	}
	return path
}

// workspace opens the fixture's workspace as a mage target would.
func (f *fixture) workspace() *Workspace {
	f.t.Helper()
	cfg, err := config.Load(f.root, func(k string) (string, bool) { v, ok := f.env[k]; return v, ok })
	if err != nil {
		f.t.Fatal(err)
	}
	w := New(cfg)
	w.In, w.Out, w.Err = nil, &f.out, &f.out
	return w
}

func (f *fixture) image() error {
	f.t.Helper()
	f.out.Reset()
	ctx, cancel := context.WithTimeout(f.t.Context(), 2*time.Minute)
	defer cancel()
	return f.workspace().Image(ctx)
}

func (f *fixture) bases() []string {
	f.t.Helper()
	names, _ := filepath.Glob(filepath.Join(f.root, ".armdev", "bases", "*.img"))
	return names
}

func (f *fixture) meta() instance.DiskMeta {
	f.t.Helper()
	wd, err := f.workspace().l.LoadDisk()
	if err != nil || wd.State != instance.KnownDisk {
		f.t.Fatalf("no disk meta: %+v %v", wd, err)
	}
	return wd.Meta
}

func TestImageBuildsInjectsAndOverlays(t *testing.T) {
	f := newFixture(t)
	if err := f.image(); err != nil {
		t.Fatalf("image: %v\n%s", err, f.out.String())
	}
	if len(f.bases()) != 1 {
		t.Fatalf("bases: %v", f.bases())
	}
	base := f.bases()[0]
	ctx := t.Context()
	part, err := disk.RootPartition(base)
	if err != nil || part.Start != 39845888 {
		t.Fatalf("root partition %+v %v", part, err)
	}
	pub, err := os.ReadFile(filepath.Join(f.root, ".armdev", "ssh", "id_ed25519.pub"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/root/.ssh/authorized_keys", "/etc/ssh/authorized_keys.d/root"} {
		data, err := disk.ReadFile(ctx, base, part.Start, p)
		if err != nil || strings.TrimSpace(string(data)) != strings.TrimSpace(string(pub)) {
			t.Errorf("%s = %q, %v; want the workspace key", p, data, err)
		}
		st, err := disk.Stat(ctx, base, part.Start, p)
		if err != nil || st.Mode.Perm() != 0o600 || st.UID != 0 {
			t.Errorf("%s: %+v %v", p, st, err)
		}
	}
	if st, err := disk.Stat(ctx, base, part.Start, "/root/.ssh"); err != nil || st.Mode.Perm() != 0o700 {
		t.Errorf("/root/.ssh: %+v %v", st, err)
	}
	if st, err := disk.Stat(ctx, base, part.Start, "/root/armdev-provision.sh"); err != nil || st.Mode.Perm() != 0o755 {
		t.Errorf("provisioning script: %+v %v", st, err)
	}
	info, err := disk.ImageInfo(ctx, "qemu-img", filepath.Join(f.root, ".armdev", "disk.qcow2"))
	if err != nil || info.BackingFile != base || info.VirtualSize != 1<<30 {
		t.Errorf("overlay: %+v %v", info, err)
	}
}

func TestImageRebuildsOnlyOnRealChange(t *testing.T) {
	f := newFixture(t)
	if err := f.image(); err != nil {
		t.Fatalf("image: %v\n%s", err, f.out.String())
	}
	first := f.meta()
	diskPath := filepath.Join(f.root, ".armdev", "disk.qcow2")
	diskStat, _ := os.Stat(diskPath)

	// touch everything: nothing is rebuilt and Hydra is not asked.
	future := time.Now().Add(time.Minute)
	for _, dir := range []string{"init", "share", "u-boot.bin"} {
		filepath.Walk(filepath.Join(f.root, dir), func(p string, _ os.FileInfo, _ error) error { return os.Chtimes(p, future, future) })
	}
	dls, _ := filepath.Glob(filepath.Join(f.root, ".armdev", "downloads", "*.img.zst"))
	os.Chtimes(dls[0], future, future)
	f.hydra.ResetLog()
	if err := f.image(); err != nil {
		t.Fatalf("image after touch: %v\n%s", err, f.out.String())
	}
	if reqs := f.hydra.Requests(); len(reqs) != 0 {
		t.Errorf("touch caused requests: %v", reqs)
	}
	if len(f.bases()) != 1 || f.meta().BaseKey != first.BaseKey {
		t.Errorf("touch rebuilt: bases %v", f.bases())
	}
	if st, _ := os.Stat(diskPath); !st.ModTime().Equal(diskStat.ModTime()) {
		t.Errorf("touch replaced the working disk")
	}

	// an edit in share/etc/nixos: no rebuild, a notice once provisioned.
	m := f.meta()
	m.Provisioned = true
	_, identity, err := f.workspace().identity(m)
	if err != nil {
		t.Fatal(err)
	}
	if m.AppliedConfig, err = f.workspace().appliedDigest(identity); err != nil {
		t.Fatal(err)
	}
	if err := f.workspace().l.SaveDisk(m); err != nil {
		t.Fatal(err)
	}
	f.write("share/etc/nixos/configuration.nix", "{ ... }: { networking.hostName = \"x\"; }\n", 0o644)
	if err := f.image(); err != nil {
		t.Fatalf("image after config edit: %v", err)
	}
	if !strings.Contains(f.out.String(), "configuration changed: run `just arm-dev-update`") {
		t.Errorf("no notice:\n%s", f.out.String())
	}
	if len(f.bases()) != 1 || len(f.hydra.Requests()) != 0 {
		t.Errorf("a config edit rebuilt or downloaded")
	}

	// an edit in init/: a new base; the existing disk is kept without a yes…
	f.write("init/etc/armdev-note", "changed\n", 0o644)
	err = f.image()
	if err == nil || !strings.Contains(err.Error(), "ARMDEV_YES=1") {
		t.Fatalf("replacing the disk without a yes: %v", err)
	}
	if len(f.bases()) != 2 || f.meta().BaseKey != first.BaseKey {
		t.Errorf("after refusal: bases %d, disk base %s", len(f.bases()), f.meta().BaseKey)
	}
	// …and replaced with one, the old disk backed up.
	f.env["ARMDEV_YES"] = "1"
	if err := f.image(); err != nil {
		t.Fatalf("image with yes: %v\n%s", err, f.out.String())
	}
	if f.meta().BaseKey == first.BaseKey {
		t.Errorf("disk not replaced")
	}
	backups, _ := filepath.Glob(filepath.Join(f.root, ".armdev", "backups", "disk-*.qcow2"))
	if len(backups) != 1 {
		t.Errorf("backups: %v", backups)
	}
	if info, err := disk.ImageInfo(t.Context(), "qemu-img", backups[0]); err != nil || info.BackingFile != first.Base {
		t.Errorf("backup lost its base: %+v %v", info, err)
	}

	// a release change resolves again.
	f.hydra.AddBuild("unstable", "nixos-image-sd-card-unstable-aarch64-linux.img.zst", sdImageZst(t, "second"))
	f.env["ARMDEV_NIXOS_RELEASE"] = "unstable"
	f.hydra.ResetLog()
	if err := f.image(); err != nil {
		t.Fatalf("image after release change: %v\n%s", err, f.out.String())
	}
	if reqs := strings.Join(f.hydra.Requests(), "\n"); !strings.Contains(reqs, "release-unstable") || !strings.Contains(reqs, "/download/") {
		t.Errorf("release change requests: %s", reqs)
	}
	if m := f.meta(); m.Release != "unstable" || len(f.bases()) != 3 {
		t.Errorf("after release change: %+v, bases %d", m, len(f.bases()))
	}

	// clean keeps what the disk, the backups and the lock use: drop the
	// oldest backup, and its base and the old download are unused.
	backups, _ = filepath.Glob(filepath.Join(f.root, ".armdev", "backups", "disk-*.qcow2"))
	if len(backups) != 2 {
		t.Fatalf("backups: %v", backups)
	}
	var oldest instance.DiskMeta
	for _, b := range backups {
		m, _ := instance.ReadDiskMeta(strings.TrimSuffix(b, ".qcow2") + ".json")
		if m.Base == first.Base {
			oldest = m
			os.Remove(b)
			os.Remove(strings.TrimSuffix(b, ".qcow2") + ".json")
		}
	}
	if oldest.Base == "" {
		t.Fatalf("no backup of the first disk")
	}
	f.out.Reset()
	if err := f.workspace().Clean(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(f.out.String(), "freed") {
		t.Errorf("clean: %s", f.out.String())
	}
	if len(f.bases()) != 2 { // the second backup's and the current disk's
		t.Errorf("clean left bases %v", f.bases())
	}
	dls, _ = filepath.Glob(filepath.Join(f.root, ".armdev", "downloads", "*.img.zst"))
	if len(dls) != 1 {
		t.Errorf("clean left downloads %v", dls)
	}
}

func TestStateVersionFollowsTheImage(t *testing.T) {
	cases := map[instance.DiskMeta]string{
		{Release: "unstable", Image: "nixos-image-sd-card-26.11pre912345.abcdef01234-aarch64-linux.img.zst"}: "26.11",
		{Release: "26.05", Image: "nixos-sd-image-26.05.20260601.abcdef0-aarch64-linux.img.zst"}:             "26.05",
		{Release: "26.05", Image: "odd-name.img.zst"}:                                                        "26.05",
	}
	for m, want := range cases {
		if got := stateVersion(m); got != want {
			t.Errorf("stateVersion(%q, %q) = %q, want %q", m.Release, m.Image, got, want)
		}
	}
}

func TestArgsFromEnvKeepsEveryArgument(t *testing.T) {
	env := map[string]string{"ARMDEV_ARGC": "4", "ARMDEV_ARG_0": "--", "ARMDEV_ARG_1": "sh", "ARMDEV_ARG_2": "-c", "ARMDEV_ARG_3": `echo "a  b"`}
	got := ArgsFromEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if strings.Join(got, "|") != `sh|-c|echo "a  b"` {
		t.Errorf("args %q", got)
	}
}
