package workspace

// Tests for issue 9 §1–3: what must never be lost or corrupted when two
// armdevs share a workspace, when disk.json goes missing, when a state
// folder has two spellings, and when a run is killed.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rsonpath/armdev/internal/config"
	"github.com/rsonpath/armdev/internal/disk"
	"github.com/rsonpath/armdev/internal/instance"
	"github.com/rsonpath/armdev/internal/testutil"
)

// workspaceWith opens the fixture's workspace with env overriding the
// fixture's settings and out taking both outputs. Unlike f.workspace it
// touches nothing shared, so parallel subtests and goroutines may use it.
func (f *fixture) workspaceWith(t *testing.T, out io.Writer, env map[string]string) *Workspace {
	t.Helper()
	cfg, err := config.Load(f.root, func(k string) (string, bool) {
		if v, ok := env[k]; ok {
			return v, true
		}
		v, ok := f.env[k]
		return v, ok
	})
	if err != nil {
		t.Fatal(err)
	}
	w := New(cfg)
	w.In, w.Out, w.Err = nil, out, out
	return w
}

// eventually polls cond until it holds, failing the test after within.
func eventually(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rootFSClean runs `e2fsck -fn` on the root partition of the raw image at
// path; the error carries e2fsck's report.
func rootFSClean(path string) error {
	e2fsck, err := disk.LookTool("e2fsck")
	if err != nil {
		return err
	}
	part, err := disk.RootPartition(path)
	if err != nil {
		return err
	}
	out, err := exec.Command(e2fsck, "-fn", fmt.Sprintf("%s?offset=%d", path, part.Start)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("e2fsck -fn %s: %v\n%s", path, err, out)
	}
	return nil
}

// qemuImg runs qemu-img with args; the error carries its output.
func qemuImg(args ...string) (string, error) {
	out, err := exec.Command("qemu-img", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// fileDigest is the sha256 of the file at path.
func fileDigest(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// listDir names what dir holds, sorted; nothing when it does not exist.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// waitingLine is what a run waiting for the workspace lock says.
func waitingLine(op string) string {
	return fmt.Sprintf("waiting for another armdev in this workspace (pid %d: %s)", os.Getpid(), op)
}

// §1: two image runs in one fresh workspace, started together, many times.
// Without the workspace lock and per-run partial files, both runs decompress
// and debugfs the same bases/<key>.img.partial: on the old code (429356b)
// every round had a failed run, and in one round of four the run that
// "succeeded" left a base e2fsck rejects (measured over 20 rounds: 20 and 5).
func TestParallelImageRunsLeaveCleanBases(t *testing.T) {
	const rounds = 10
	f := newFixture(t)
	waited := 0
	for round := range rounds {
		state := filepath.Join(t.TempDir(), "state")
		env := map[string]string{"ARMDEV_STATE_DIR": state}
		var outs [2]testutil.SyncBuffer
		var errs [2]error
		runs := [2]*Workspace{f.workspaceWith(t, &outs[0], env), f.workspaceWith(t, &outs[1], env)}
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range runs {
			wg.Go(func() {
				<-start
				errs[i] = runs[i].Image(ctx)
			})
		}
		close(start)
		wg.Wait()
		cancel()
		report := fmt.Sprintf("round %d:\nrun 0: %v\n%s\nrun 1: %v\n%s", round, errs[0], outs[0].String(), errs[1], outs[1].String())

		// The lock makes the second run wait, then find everything done:
		// both succeed, and only one of them built the base.
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("a run failed:\n%s", report)
		}
		built, roundWaited := 0, false
		for i := range outs {
			out := outs[i].String()
			if strings.Contains(out, "decompressing") {
				built++
			}
			for line := range strings.Lines(out) {
				if strings.Contains(line, "waiting for another armdev") {
					if strings.TrimSpace(line) != waitingLine("image") {
						t.Errorf("the waiting run said %q, want %q", line, waitingLine("image"))
					}
					roundWaited = true
				}
			}
		}
		if roundWaited {
			waited++
		}
		if built != 1 {
			t.Errorf("%d runs built the base, want 1:\n%s", built, report)
		}
		// Every base left is whole, and nothing half-made is left beside it.
		bases := listDir(t, filepath.Join(state, instance.Bases))
		if len(bases) != 1 || !strings.HasSuffix(bases[0], ".img") {
			t.Fatalf("bases/ holds %q, want one base:\n%s", bases, report)
		}
		if err := rootFSClean(filepath.Join(state, instance.Bases, bases[0])); err != nil {
			t.Errorf("round %d: the base is corrupt: %v", round, err)
		}
		if _, err := qemuImg("check", filepath.Join(state, instance.Disk)); err != nil {
			t.Errorf("round %d: the working disk: %v", round, err)
		}
	}
	// Runs that never overlapped would prove nothing.
	if waited == 0 {
		t.Errorf("in %d rounds no run waited for the other: the runs never raced", rounds)
	}
	t.Logf("%d of %d rounds had a run wait for the other", waited, rounds)
}

// §5: each run prepares its base under a name of its own. Two preparations
// of the same base at once (which the lock prevents, but nothing else
// should make fatal) both succeed and leave a whole base. On the old code
// both wrote bases/<key>.img.partial, and one failed or the base was
// corrupt.
func TestBasePreparationsDoNotShareAPartialFile(t *testing.T) {
	f := newFixture(t)
	if err := f.image(); err != nil {
		t.Fatalf("image: %v\n%s", err, f.out.String())
	}
	zsts, _ := filepath.Glob(filepath.Join(f.root, ".armdev", instance.Downloads, "*.img.zst"))
	if len(zsts) != 1 {
		t.Fatalf("downloads: %v", zsts)
	}
	const key, authorized = "sharedkey", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTheRace test"
	for round := range 3 {
		var outs [2]testutil.SyncBuffer
		var errs [2]error
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range 2 {
			w := f.workspaceWith(t, &outs[i], nil)
			wg.Go(func() {
				<-start
				errs[i] = w.base(t.Context(), zsts[0], key, authorized)
			})
		}
		close(start)
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("round %d: preparations failed: %v; %v\n%s%s", round, errs[0], errs[1], outs[0].String(), outs[1].String())
		}
		base := filepath.Join(f.root, ".armdev", instance.Bases, key+".img")
		if err := rootFSClean(base); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		part, err := disk.RootPartition(base)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := disk.ReadFile(t.Context(), base, part.Start, "/root/.ssh/authorized_keys"); err != nil || string(got) != authorized+"\n" {
			t.Errorf("round %d: the base's key is %q, %v", round, got, err)
		}
		for _, name := range listDir(t, filepath.Dir(base)) {
			if strings.Contains(name, "partial") || strings.Contains(name, ".tmp") {
				t.Errorf("round %d: left behind %s", round, name)
			}
		}
		if err := os.Remove(base); err != nil {
			t.Fatal(err)
		}
	}
}

// killedImageHelper is the environment variable that makes
// TestHelperKilledImageRun run an image pipeline in its own process.
const killedImageHelper = "WORKSPACE_TEST_KILLED_IMAGE_ROOT"

// TestHelperKilledImageRun is the process TestKilledRunLeftoverNeverBecomesABase
// kills: it runs Image in the workspace named by its environment.
func TestHelperKilledImageRun(t *testing.T) {
	root := os.Getenv(killedImageHelper)
	if root == "" {
		t.Skip("runs only as TestKilledRunLeftoverNeverBecomesABase's helper process")
	}
	w, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Fatalf("the helper's image run returned (it should have been killed): %v", w.Image(t.Context()))
}

// §5: a run killed in the middle of preparing a base (SIGKILL: no deferred
// cleanup runs) leaves a partial file that no later run takes for a base;
// the next run builds its own, and clean removes the leftover.
func TestKilledRunLeftoverNeverBecomesABase(t *testing.T) {
	f := newFixture(t)
	state := filepath.Join(f.root, ".armdev")
	bases := filepath.Join(state, instance.Bases)

	// The helper process runs the real pipeline up to its first debugfs,
	// which is a stand-in that says so and hangs: the base is decompressed
	// but nothing is injected yet, the leftover that looks most complete.
	bin := t.TempDir()
	marker := filepath.Join(t.TempDir(), "debugfs-started")
	stub := fmt.Sprintf("#!/bin/sh\n: > '%s'\nexec sleep 600\n", marker)
	if err := os.WriteFile(filepath.Join(bin, "debugfs"), []byte(stub), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperKilledImageRun$", "-test.count=1")
	env := []string{killedImageHelper + "=" + f.root, "PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH")}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ARMDEV_") && !strings.HasPrefix(kv, "PATH=") {
			env = append(env, kv)
		}
	}
	for k, v := range f.env {
		env = append(env, k+"="+v)
	}
	var childOut testutil.SyncBuffer
	cmd.Env, cmd.Stdout, cmd.Stderr = env, &childOut, &childOut
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // the stand-in debugfs dies with it
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	deadline := time.After(2 * time.Minute)
	for _, err := os.Stat(marker); err != nil; _, err = os.Stat(marker) {
		select {
		case err := <-exited:
			killed = true
			t.Fatalf("the helper ended before reaching debugfs: %v\n%s", err, childOut.String())
		case <-deadline:
			t.Fatalf("the helper never reached debugfs:\n%s", childOut.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	killed = true

	leftovers := listDir(t, bases)
	if len(leftovers) == 0 {
		t.Fatal("the killed run left nothing in bases/: the test killed it too early or too late")
	}
	for _, name := range leftovers {
		if strings.HasSuffix(name, ".img") {
			t.Fatalf("the killed run left a base: %s", name)
		}
	}
	t.Logf("the killed run left %q", leftovers)
	leftoverInfo := map[string]os.FileInfo{}
	for _, name := range leftovers {
		st, err := os.Stat(filepath.Join(bases, name))
		if err != nil {
			t.Fatal(err)
		}
		leftoverInfo[name] = st
	}

	// The next run builds a base of its own, with the key in it, and does
	// not wait: the dead run's lock died with it.
	if err := f.image(); err != nil {
		t.Fatalf("image after the kill: %v\n%s", err, f.out.String())
	}
	if strings.Contains(f.out.String(), "waiting for another armdev") {
		t.Errorf("the run after the kill waited for the dead one:\n%s", f.out.String())
	}
	if !strings.Contains(f.out.String(), "decompressing") {
		t.Errorf("the run after the kill did not prepare a base of its own:\n%s", f.out.String())
	}
	built := f.bases()
	if len(built) != 1 {
		t.Fatalf("bases: %v", built)
	}
	base := built[0]
	if err := rootFSClean(base); err != nil {
		t.Fatal(err)
	}
	part, err := disk.RootPartition(base)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(filepath.Join(state, instance.SSHDir, "id_ed25519.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := disk.ReadFile(t.Context(), base, part.Start, "/root/.ssh/authorized_keys"); err != nil || strings.TrimSpace(string(got)) != strings.TrimSpace(string(pub)) {
		t.Errorf("the base lacks the workspace key (%q, %v): it is the killed run's leftover", got, err)
	}
	st, err := os.Stat(base)
	if err != nil {
		t.Fatal(err)
	}
	for name, info := range leftoverInfo {
		if os.SameFile(st, info) {
			t.Errorf("the killed run's %s became the base", name)
		}
	}

	// Nothing refers to the leftover: clean removes it and keeps the base.
	f.out.Reset()
	if err := f.workspace().Clean(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := listDir(t, bases); len(got) != 1 || got[0] != filepath.Base(base) {
		t.Errorf("after clean bases/ holds %q, want only %s:\n%s", got, filepath.Base(base), f.out.String())
	}
	if _, err := qemuImg("check", filepath.Join(state, instance.Disk)); err != nil {
		t.Error(err)
	}
}

// §2: a disk.qcow2 whose disk.json is gone (deleted, or left empty or torn
// by a crash) is still somebody's disk. On the old code a missing disk.json
// meant "no disk", and image put a new overlay over the old one, snapshots
// and all, without asking; an empty one stopped with "delete it to start
// over", which leads to the same loss.
func TestLostDiskMetadataNeverReplacesTheDisk(t *testing.T) {
	losses := map[string]func(path string) error{
		"deleted":   os.Remove,
		"truncated": func(p string) error { return os.Truncate(p, 0) },
		"torn": func(p string) error {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(p, data[:len(data)/2], 0o644)
		},
	}
	for name, lose := range losses {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			if err := f.image(); err != nil {
				t.Fatalf("image: %v\n%s", err, f.out.String())
			}
			state := filepath.Join(f.root, ".armdev")
			diskPath, metaPath := filepath.Join(state, instance.Disk), filepath.Join(state, instance.DiskMetaFile)
			if err := disk.Snapshot(t.Context(), "qemu-img", diskPath, instance.ProvisionedSnapshot); err != nil {
				t.Fatal(err)
			}
			before := fileDigest(t, diskPath)
			beforeInfo, err := os.Stat(diskPath)
			if err != nil {
				t.Fatal(err)
			}
			if err := lose(metaPath); err != nil {
				t.Fatal(err)
			}
			untouched := func(when string) {
				t.Helper()
				st, err := os.Stat(diskPath)
				if err != nil || !os.SameFile(st, beforeInfo) || fileDigest(t, diskPath) != before {
					t.Fatalf("%s: the disk was replaced or changed (%v)", when, err)
				}
				if b := listDir(t, filepath.Join(state, instance.Backups)); len(b) != 0 {
					t.Errorf("%s: backups appeared: %v", when, b)
				}
			}

			// Without a yes: refused with what to do, the disk untouched.
			err = f.image()
			if err == nil || !strings.Contains(err.Error(), "ARMDEV_YES=1") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("image without a yes = %v; want one line that names ARMDEV_YES=1\n%s", err, f.out.String())
			}
			untouched("after image without a yes")
			if out, err := qemuImg("snapshot", "-l", diskPath); err != nil || !strings.Contains(out, instance.ProvisionedSnapshot) {
				t.Errorf("snapshots after the refusal: %v\n%s", err, out)
			}

			// Start and status say what to do, and change nothing.
			err = f.workspace().Start(t.Context())
			if err == nil || !strings.Contains(err.Error(), "no readable metadata") || !strings.Contains(err.Error(), "just arm-dev-init") {
				t.Errorf("start on the disk = %v; want the metadata named and `just arm-dev-init`", err)
			}
			f.out.Reset()
			if err := f.workspace().Status(t.Context()); err != nil {
				t.Errorf("status: %v", err)
			}
			if out := f.out.String(); !strings.Contains(out, "metadata unreadable") || !strings.Contains(out, "just arm-dev-init") {
				t.Errorf("status does not say what to do:\n%s", out)
			}
			untouched("after start and status")

			// With a yes: the old disk, snapshots and all, moves to backups/.
			f.env["ARMDEV_YES"] = "1"
			if err := f.image(); err != nil {
				t.Fatalf("image with a yes: %v\n%s", err, f.out.String())
			}
			backups, _ := filepath.Glob(filepath.Join(state, instance.Backups, "disk-*.qcow2"))
			if len(backups) != 1 {
				t.Fatalf("backups: %v", backups)
			}
			if st, err := os.Stat(backups[0]); err != nil || !os.SameFile(st, beforeInfo) || fileDigest(t, backups[0]) != before {
				t.Errorf("the backup is not the old disk as it was (%v)", err)
			}
			if out, err := qemuImg("snapshot", "-l", backups[0]); err != nil || !strings.Contains(out, instance.ProvisionedSnapshot) || !strings.Contains(out, instance.FreshSnapshot) {
				t.Errorf("the backup's snapshots: %v\n%s", err, out)
			}
			if _, err := qemuImg("check", backups[0]); err != nil {
				t.Errorf("the backup: %v", err)
			}
			if !strings.Contains(f.out.String(), "kept the old disk as "+backups[0]) {
				t.Errorf("image did not say where the old disk went:\n%s", f.out.String())
			}
			// …and a new disk with readable metadata and no provisioned state.
			st, err := os.Stat(diskPath)
			if err != nil || os.SameFile(st, beforeInfo) {
				t.Fatalf("no new disk (%v)", err)
			}
			if m := f.meta(); m.Provisioned || m.BaseKey == "" {
				t.Errorf("the new disk's metadata: %+v", m)
			}
			if has, err := disk.HasSnapshot(t.Context(), "qemu-img", diskPath, instance.ProvisionedSnapshot); err != nil || has {
				t.Errorf("the new disk has a provisioned snapshot (%v)", err)
			}
		})
	}
}

// plantUnusedBase puts a base no disk uses into bases/, so that a clean
// that keeps everything cannot pass for one that keeps the right things.
func plantUnusedBase(t *testing.T, state string) string {
	t.Helper()
	p := filepath.Join(state, instance.Bases, "00000000000000unused.img")
	if err := os.WriteFile(p, []byte("an old base"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// §3: clean decides what a disk uses from the disk, comparing files, not
// path strings. On the old code a disk made through a symlinked state
// folder and cleaned through the real one (or the other way round) lost its
// base: `qemu-img check` then failed with "Could not open backing file".
func TestCleanKeepsTheBaseWhateverTheSpelling(t *testing.T) {
	for _, tc := range []struct{ name, made, cleaned string }{
		{"made through a symlink, cleaned through the real path", "link", "real"},
		{"made through the real path, cleaned through a symlink", "real", "link"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			dirs := map[string]string{"real": filepath.Join(f.root, "state"), "link": filepath.Join(f.root, "state-link")}
			if err := os.Mkdir(dirs["real"], 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(dirs["real"], dirs["link"]); err != nil {
				t.Fatal(err)
			}
			f.env["ARMDEV_STATE_DIR"] = dirs[tc.made]
			if err := f.image(); err != nil {
				t.Fatalf("image: %v\n%s", err, f.out.String())
			}
			base := f.meta().Base
			if !strings.HasPrefix(base, dirs[tc.made]+string(filepath.Separator)) {
				t.Fatalf("the disk records its base as %s, not through %s: the test checks nothing", base, dirs[tc.made])
			}
			unused := plantUnusedBase(t, dirs["real"])

			f.env["ARMDEV_STATE_DIR"] = dirs[tc.cleaned]
			f.out.Reset()
			if err := f.workspace().Clean(t.Context()); err != nil {
				t.Fatalf("clean: %v\n%s", err, f.out.String())
			}
			if _, err := os.Stat(base); err != nil {
				t.Errorf("clean removed the working disk's base:\n%s", f.out.String())
			}
			if _, err := os.Stat(unused); err == nil {
				t.Errorf("clean kept %s, which nothing uses", unused)
			}
			for _, dir := range dirs {
				if _, err := qemuImg("check", filepath.Join(dir, instance.Disk)); err != nil {
					t.Errorf("after clean: %v", err)
				}
			}
		})
	}
}

// §3: the bases of backups are kept when their metadata is unreadable. On
// the old code clean kept what backups/*.json named, so a backup whose json
// was gone lost its base.
func TestCleanKeepsBasesOfBackupsWithoutMetadata(t *testing.T) {
	for name, lose := range map[string]func(string) error{
		"deleted": os.Remove,
		"garbage": func(p string) error { return os.WriteFile(p, []byte("{\"base\": "), 0o644) },
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			state := filepath.Join(f.root, ".armdev")
			if err := f.image(); err != nil {
				t.Fatalf("image: %v\n%s", err, f.out.String())
			}
			oldBase := f.meta().Base
			// A new base (init/ changed) replaces the disk; the old one is a backup.
			f.write("init/etc/armdev-note", "changed\n", 0o644)
			f.env["ARMDEV_YES"] = "1"
			if err := f.image(); err != nil {
				t.Fatalf("image with a new base: %v\n%s", err, f.out.String())
			}
			backups, _ := filepath.Glob(filepath.Join(state, instance.Backups, "disk-*.qcow2"))
			if len(backups) != 1 {
				t.Fatalf("backups: %v", backups)
			}
			if err := lose(strings.TrimSuffix(backups[0], ".qcow2") + ".json"); err != nil {
				t.Fatal(err)
			}
			unused := plantUnusedBase(t, state)

			f.out.Reset()
			if err := f.workspace().Clean(t.Context()); err != nil {
				t.Fatalf("clean: %v\n%s", err, f.out.String())
			}
			for _, b := range []string{oldBase, f.meta().Base} {
				if _, err := os.Stat(b); err != nil {
					t.Errorf("clean removed %s, which a disk uses:\n%s", b, f.out.String())
				}
			}
			if _, err := os.Stat(unused); err == nil {
				t.Errorf("clean kept %s, which nothing uses", unused)
			}
			for _, d := range []string{backups[0], filepath.Join(state, instance.Disk)} {
				if _, err := qemuImg("check", d); err != nil {
					t.Errorf("after clean: %v", err)
				}
			}
		})
	}
}

// §3: when a disk's backing chain cannot be read, clean cannot tell what
// is used, so it removes nothing and says why. The old code never read the
// disks and removed whatever disk.json and backups/*.json did not name.
func TestCleanRemovesNothingWhenAChainIsUnreadable(t *testing.T) {
	for name, breakIt := range map[string]func(t *testing.T, state string){
		"a backup whose base is gone": func(t *testing.T, state string) {
			if err := os.MkdirAll(filepath.Join(state, instance.Backups), 0o755); err != nil {
				t.Fatal(err)
			}
			gone := filepath.Join(state, instance.Bases, "gone.img")
			if _, err := qemuImg("create", "-q", "-u", "-f", "qcow2", "-F", "raw", "-b", gone,
				filepath.Join(state, instance.Backups, "disk-20260101-000000.qcow2"), "1G"); err != nil {
				t.Fatal(err)
			}
		},
		"a working disk cut short": func(t *testing.T, state string) {
			if err := os.Truncate(filepath.Join(state, instance.Disk), 64); err != nil {
				t.Fatal(err)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			state := filepath.Join(f.root, ".armdev")
			if err := f.image(); err != nil {
				t.Fatalf("image: %v\n%s", err, f.out.String())
			}
			plantUnusedBase(t, state)
			// An old download the lock no longer names: clean would remove it.
			if err := os.WriteFile(filepath.Join(state, instance.Downloads, "1-old.img.zst"), []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
			breakIt(t, state)
			before := [][]string{listDir(t, filepath.Join(state, instance.Bases)), listDir(t, filepath.Join(state, instance.Downloads))}

			f.out.Reset()
			err := f.workspace().Clean(t.Context())
			if err == nil || !strings.Contains(err.Error(), "removes nothing") {
				t.Fatalf("clean = %v; want a refusal that says it removes nothing\n%s", err, f.out.String())
			}
			after := [][]string{listDir(t, filepath.Join(state, instance.Bases)), listDir(t, filepath.Join(state, instance.Downloads))}
			for i := range before {
				if !slices.Equal(before[i], after[i]) {
					t.Errorf("clean removed files: %q became %q", before[i], after[i])
				}
			}
			if strings.Contains(f.out.String(), "removed") {
				t.Errorf("clean reported removals:\n%s", f.out.String())
			}
		})
	}
}
