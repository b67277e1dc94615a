package instance

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLayoutNamesEveryFileOnce(t *testing.T) {
	l := Layout{Dir: "/s"}
	paths := map[string]string{
		"hydra lock": l.HydraLock(), "disk": l.Disk(), "disk meta": l.DiskMeta(),
		"known hosts": l.KnownHosts(), "ssh config": l.SSHConfig(), "identity": l.Identity(),
		"pid": l.PIDFile(), "qmp": l.QMPSocket(), "serial": l.SerialSocket(), "run": l.RunRecord(),
		"serial log": l.SerialLog(), "qemu log": l.QEMULog(), "provision log": l.ProvisionLog(),
		"lock": l.LockFile(), "base": l.Base("k"), "stamp": l.Stamp("init"),
	}
	seen := map[string]string{}
	for what, p := range paths {
		if !strings.HasPrefix(p, "/s/") {
			t.Errorf("%s = %q is outside the state folder", what, p)
		}
		if other, dup := seen[p]; dup {
			t.Errorf("%s and %s share %q", what, other, p)
		}
		seen[p] = what
	}
	if got := l.PIDFile(); got != "/s/run/qemu.pid" {
		t.Errorf("pid file %q: existing workspaces keep theirs at run/qemu.pid", got)
	}
}

func TestLoadDisk(t *testing.T) {
	l := Layout{Dir: t.TempDir()}
	if wd, err := l.LoadDisk(); err != nil || wd.State != NoDisk {
		t.Fatalf("empty folder: %+v, %v", wd, err)
	}
	// Metadata without a disk is no disk.
	if err := l.SaveDisk(DiskMeta{BaseKey: "k"}); err != nil {
		t.Fatal(err)
	}
	if wd, err := l.LoadDisk(); err != nil || wd.State != NoDisk {
		t.Fatalf("metadata only: %+v, %v", wd, err)
	}
	if err := os.WriteFile(l.Disk(), []byte("qcow2"), 0o644); err != nil {
		t.Fatal(err)
	}
	wd, err := l.LoadDisk()
	if err != nil || wd.State != KnownDisk || wd.Meta.BaseKey != "k" {
		t.Fatalf("disk and metadata: %+v, %v", wd, err)
	}
	// A disk whose metadata is gone or broken is still a disk.
	for name, corrupt := range map[string]func() error{
		"missing": func() error { return os.Remove(l.DiskMeta()) },
		"empty":   func() error { return os.WriteFile(l.DiskMeta(), nil, 0o644) },
		"garbage": func() error { return os.WriteFile(l.DiskMeta(), []byte("{\"base_k"), 0o644) },
	} {
		if err := corrupt(); err != nil {
			t.Fatal(err)
		}
		wd, err := l.LoadDisk()
		if err != nil || wd.State != UnknownDisk || wd.MetaErr == nil {
			t.Errorf("%s metadata: %+v, %v; want an UnknownDisk with the reason", name, wd, err)
		}
	}
}

func TestDiskMetaUser(t *testing.T) {
	if got := (DiskMeta{}).User(); got != "armdev" {
		t.Errorf("a disk from before GuestUser logs in as %q, want armdev", got)
	}
	if got := (DiskMeta{GuestUser: "dev"}).User(); got != "dev" {
		t.Errorf("User() = %q, want dev", got)
	}
}

func TestRunRecord(t *testing.T) {
	l := Layout{Dir: t.TempDir()}
	if _, ok, err := l.LoadRun(); ok || err != nil {
		t.Fatalf("no record: ok=%v err=%v", ok, err)
	}
	want := RunRecord{PID: 42, SSHPort: 5022, QMP: "/x/qmp.sock", Cmdline: "qemu-system-aarch64 -m 1024M"}
	if err := l.SaveRun(want); err != nil {
		t.Fatal(err)
	}
	got, ok, err := l.LoadRun()
	if err != nil || !ok || got != want {
		t.Fatalf("LoadRun = %+v %v %v, want %+v", got, ok, err, want)
	}
	if err := l.ClearRun(); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := l.LoadRun(); ok {
		t.Error("the record survived ClearRun")
	}
	if err := l.ClearRun(); err != nil {
		t.Errorf("clearing twice: %v", err)
	}
}

func TestLockOneWriter(t *testing.T) {
	l := Layout{Dir: filepath.Join(t.TempDir(), "state")}
	ctx := t.Context()
	first, err := l.Acquire(ctx, "init", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	holder := fmt.Sprintf("pid %d: init", os.Getpid())

	// Without waiting: a BusyError naming the holder.
	_, err = l.Acquire(ctx, "clean", false, nil)
	var busy *BusyError
	if !errors.As(err, &busy) || busy.Holder != holder {
		t.Fatalf("second Acquire = %v, want a BusyError naming %q", err, holder)
	}

	// Waiting: one line naming the holder, then the lock once it is free.
	var mu sync.Mutex
	var said []string
	got := make(chan error, 1)
	go func() {
		lk, err := l.Acquire(ctx, "start", true, func(s string) { mu.Lock(); said = append(said, s); mu.Unlock() })
		if err == nil {
			err = lk.Release()
		}
		got <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(said)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the waiting Acquire never said it waits")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-got:
		t.Fatalf("the waiter got the lock while it was held: %v", err)
	case <-time.After(3 * lockPoll):
	}
	if err := first.Release(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter did not get the released lock")
	}
	mu.Lock()
	defer mu.Unlock()
	if want := "waiting for another armdev in this workspace (" + holder + ")"; len(said) != 1 || said[0] != want {
		t.Errorf("said %q, want once %q", said, want)
	}
}

func TestLockWaitEndsWithContext(t *testing.T) {
	l := Layout{Dir: t.TempDir()}
	lk, err := l.Acquire(t.Context(), "update", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Release()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err = l.Acquire(ctx, "image", true, func(string) {})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "update") {
		t.Errorf("Acquire after the deadline = %v", err)
	}
}

func TestLockIsFreeAfterRelease(t *testing.T) {
	l := Layout{Dir: t.TempDir()}
	for i := range 3 {
		lk, err := l.Acquire(t.Context(), "kill", false, nil)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if err := lk.Release(); err != nil {
			t.Fatal(err)
		}
	}
	if data, _ := os.ReadFile(l.LockFile()); len(data) != 0 {
		t.Errorf("a released lock still names a holder: %q", data)
	}
}
