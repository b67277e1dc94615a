package workspace

// Tests for issue 9 §1 at the level of the targets: which targets take the
// workspace lock, which wait for it and which do not, and that it is free
// again after every target, however the target ended.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rsonpath/armdev/internal/fakehydra"
	"github.com/rsonpath/armdev/internal/instance"
	"github.com/rsonpath/armdev/internal/testutil"
)

// holdFor is how long a target must keep waiting while the lock is held:
// several of the lock's polls.
const holdFor = 400 * time.Millisecond

// targetFunc is a target as the magefile runs it.
type targetFunc func(*Workspace, context.Context) error

// lockedTarget is a target that changes the workspace: the name it holds
// the lock under, and whether it fails in an empty workspace (so that the
// lock is also seen freed after a failure).
type lockedTarget struct {
	op    string
	run   targetFunc
	fails bool
}

// stateChanging are the targets that wait for the lock (kill takes it
// without waiting).
func stateChanging() []lockedTarget {
	return []lockedTarget{
		{"image", (*Workspace).Image, false},
		{"init", (*Workspace).Provision, true},
		{"start", (*Workspace).Start, true},
		{"shutdown", (*Workspace).Shutdown, false},
		{"reset", (*Workspace).Reset, true},
		{"update", (*Workspace).Update, true},
		{"tidy", (*Workspace).Tidy, true},
		{"clean", (*Workspace).Clean, false},
	}
}

// readOnly are the targets that only look: they never take the lock.
func readOnly() map[string]targetFunc {
	return map[string]targetFunc{
		"status":    (*Workspace).Status,
		"sshconfig": (*Workspace).SSHConfig,
		"console":   (*Workspace).Console,
		"ssh":       func(w *Workspace, ctx context.Context) error { _, err := w.SSH(ctx, []string{"true"}); return err },
	}
}

// hold takes the workspace lock in state as another armdev running op would.
func hold(t *testing.T, state, op string) *instance.Lock {
	t.Helper()
	lk, err := instance.Layout{Dir: state}.Acquire(t.Context(), op, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lk.Release() })
	return lk
}

// lockIsFree fails the test unless the workspace lock in state can be taken
// at once.
func lockIsFree(t *testing.T, state, after string) {
	t.Helper()
	lk, err := instance.Layout{Dir: state}.Acquire(t.Context(), "check", false, nil)
	if err != nil {
		t.Fatalf("after %s the lock is not free: %v", after, err)
	}
	if err := lk.Release(); err != nil {
		t.Fatal(err)
	}
}

// runAsync runs target in the background; its result arrives on the channel.
func runAsync(ctx context.Context, w *Workspace, target targetFunc) <-chan error {
	done := make(chan error, 1)
	go func() { done <- target(w, ctx) }()
	return done
}

// result waits for a target's result, failing the test after within.
func result(t *testing.T, done <-chan error, what string, within time.Duration) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(within):
		t.Fatalf("%s did not return within %s", what, within)
		return nil
	}
}

// stillRunning fails the test if the target returns within holdFor.
func stillRunning(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("%s returned while another armdev held the lock: %v", what, err)
	case <-time.After(holdFor):
	}
}

// Every state-changing target waits while another armdev holds the lock,
// says so once, naming the holder, goes on when it is free, and frees it.
func TestStateChangingTargetsWaitForTheLock(t *testing.T) {
	f := newFixture(t)
	for _, tc := range stateChanging() {
		t.Run(tc.op, func(t *testing.T) {
			t.Parallel()
			state := filepath.Join(t.TempDir(), "state")
			holder := hold(t, state, "init")
			var out testutil.SyncBuffer
			done := runAsync(t.Context(), f.workspaceWith(t, &out, map[string]string{"ARMDEV_STATE_DIR": state}), tc.run)
			want := waitingLine("init")
			eventually(t, tc.op+" says it waits", 10*time.Second, func() bool { return strings.Contains(out.String(), want) })
			stillRunning(t, done, tc.op)
			if err := holder.Release(); err != nil {
				t.Fatal(err)
			}
			err := result(t, done, tc.op, 2*time.Minute)
			if (err != nil) != tc.fails {
				t.Errorf("%s in an empty workspace = %v, want failure %v\n%s", tc.op, err, tc.fails, out.String())
			}
			if n := strings.Count(out.String(), "waiting for another armdev"); n != 1 {
				t.Errorf("%s said it waits %d times, want once:\n%s", tc.op, n, out.String())
			}
			lockIsFree(t, state, tc.op)
		})
	}
}

// While waiting for the lock, a target says who holds it: never "pid ?",
// the placeholder for a holder that took the lock but has not written its
// name yet. Before the fix the waiter read the lock file in that moment
// (in one parallel image round of six) and said "pid ?" for good.
func TestWaitingNamesTheHolderEvenWhenItIsSlowToSay(t *testing.T) {
	f := newFixture(t)
	state := filepath.Join(t.TempDir(), "state")
	l := instance.Layout{Dir: state}
	if err := os.MkdirAll(state, 0o755); err != nil {
		t.Fatal(err)
	}
	// Another armdev took the lock and has not named itself yet.
	lf, err := os.OpenFile(l.LockFile(), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	var out testutil.SyncBuffer
	done := runAsync(t.Context(), f.workspaceWith(t, &out, map[string]string{"ARMDEV_STATE_DIR": state}), (*Workspace).Clean)
	stillRunning(t, done, "clean")
	if _, err := lf.WriteAt([]byte("pid 4242: init\n"), 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "clean says it waits", 10*time.Second, func() bool { return strings.Contains(out.String(), "waiting for another armdev") })
	if err := lf.Close(); err != nil { // drops the flock
		t.Fatal(err)
	}
	if err := result(t, done, "clean", time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(out.String()), "waiting for another armdev in this workspace (pid 4242: init)"; !strings.HasPrefix(got, want+"\n") {
		t.Errorf("clean said:\n%s\nwant first %q", got, want)
	}
}

// Kill is the way out when another armdev hangs: it does not wait, it
// refuses at once and names the holder.
func TestKillRefusesAtOnceWhileLocked(t *testing.T) {
	f := newFixture(t)
	state := filepath.Join(t.TempDir(), "state")
	holder := hold(t, state, "start")
	var out testutil.SyncBuffer
	w := f.workspaceWith(t, &out, map[string]string{"ARMDEV_STATE_DIR": state})
	err := result(t, runAsync(t.Context(), w, (*Workspace).Kill), "kill", 5*time.Second)
	var busy *instance.BusyError
	want := fmt.Sprintf("pid %d: start", os.Getpid())
	if !errors.As(err, &busy) || busy.Holder != want || !strings.Contains(err.Error(), want) {
		t.Fatalf("kill while locked = %v; want a BusyError naming %q", err, want)
	}
	if strings.Contains(out.String(), "waiting") {
		t.Errorf("kill waited:\n%s", out.String())
	}
	// It took nothing from the holder…
	if _, err := (instance.Layout{Dir: state}).Acquire(t.Context(), "check", false, nil); !errors.As(err, &busy) || busy.Holder != want {
		t.Errorf("after kill the holder lost the lock: %v", err)
	}
	// …and once the lock is free it runs, and frees it again.
	if err := holder.Release(); err != nil {
		t.Fatal(err)
	}
	if err := w.Kill(t.Context()); err != nil {
		t.Fatalf("kill with the lock free: %v", err)
	}
	if !strings.Contains(out.String(), "the guest is not running") {
		t.Errorf("kill said:\n%s", out.String())
	}
	lockIsFree(t, state, "kill")
}

// Read-only targets neither wait for the lock nor take it.
func TestReadOnlyTargetsIgnoreTheLock(t *testing.T) {
	f := newFixture(t)
	for name, run := range readOnly() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			state := filepath.Join(t.TempDir(), "state")
			hold(t, state, "init")
			var out testutil.SyncBuffer
			w := f.workspaceWith(t, &out, map[string]string{"ARMDEV_STATE_DIR": state})
			_ = result(t, runAsync(t.Context(), w, run), name, 10*time.Second) // in an empty workspace some fail; none may wait
			if strings.Contains(out.String(), "waiting") {
				t.Errorf("%s waited for the lock:\n%s", name, out.String())
			}
			l := instance.Layout{Dir: state}
			var busy *instance.BusyError
			if _, err := l.Acquire(t.Context(), "check", false, nil); !errors.As(err, &busy) || busy.Holder != fmt.Sprintf("pid %d: init", os.Getpid()) {
				t.Errorf("after %s the lock is not the holder's: %v", name, err)
			}
		})
	}
}

// A target given up while it waits for the lock stops waiting, says why,
// and leaves the holder's lock alone.
func TestTargetsStopWaitingWhenCancelled(t *testing.T) {
	f := newFixture(t)
	for _, tc := range stateChanging() {
		t.Run(tc.op, func(t *testing.T) {
			t.Parallel()
			state := filepath.Join(t.TempDir(), "state")
			holder := hold(t, state, "update")
			var out testutil.SyncBuffer
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := runAsync(ctx, f.workspaceWith(t, &out, map[string]string{"ARMDEV_STATE_DIR": state}), tc.run)
			eventually(t, tc.op+" says it waits", 10*time.Second, func() bool { return strings.Contains(out.String(), "waiting for another armdev") })
			cancel()
			err := result(t, done, tc.op, 10*time.Second)
			if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "update") {
				t.Errorf("%s cancelled while waiting = %v; want context.Canceled and the holder named", tc.op, err)
			}
			if dl := listDir(t, filepath.Join(state, instance.Downloads)); len(dl) != 0 {
				t.Errorf("%s worked without the lock: downloads %v", tc.op, dl)
			}
			if err := holder.Release(); err != nil {
				t.Fatal(err)
			}
			lockIsFree(t, state, tc.op+" cancelled while waiting")
		})
	}
}

// The lock is free after every target, whether it succeeded, failed, or
// ran with a context that was already cancelled.
func TestLockIsFreeAfterEveryTarget(t *testing.T) {
	f := newFixture(t)
	targets := map[string]targetFunc{"kill": (*Workspace).Kill}
	for _, tc := range stateChanging() {
		targets[tc.op] = tc.run
	}
	for name, run := range readOnly() {
		targets[name] = run
	}
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	for name, run := range targets {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			state := filepath.Join(t.TempDir(), "state")
			var out testutil.SyncBuffer
			w := f.workspaceWith(t, &out, map[string]string{"ARMDEV_STATE_DIR": state})
			// Cancelled first, while there is work to do: image fails then.
			_ = result(t, runAsync(cancelled, w, run), name+" with a cancelled context", 2*time.Minute)
			lockIsFree(t, state, name+" with a cancelled context")
			_ = result(t, runAsync(t.Context(), w, run), name, 2*time.Minute)
			lockIsFree(t, state, name)
		})
	}
}

// An image run cancelled in the middle of its work (here: a download that
// stalls) frees the lock, and the next run finishes the job.
func TestImageCancelledMidwayFreesTheLock(t *testing.T) {
	f := newFixture(t)
	// A hydra of this test's own, as stalling is a server-wide option.
	h := fakehydra.NewServer()
	t.Cleanup(h.Close)
	h.AddBuild("26.05", "nixos-image-sd-card-26.05-aarch64-linux.img.zst", sdImageZst(t, "stalled"))
	h.SetOptions(fakehydra.Options{StallAt: 4096})
	state := filepath.Join(t.TempDir(), "state")
	env := map[string]string{"ARMDEV_STATE_DIR": state, "ARMDEV_HYDRA_URL": h.URL()}
	var out testutil.SyncBuffer
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := runAsync(ctx, f.workspaceWith(t, &out, env), (*Workspace).Image)
	eventually(t, "the download starts", 30*time.Second, func() bool {
		return strings.Contains(strings.Join(h.Requests(), "\n"), "GET /build/") && strings.Contains(out.String(), "downloading")
	})
	stillRunning(t, done, "image with a stalled download")
	cancel()
	if err := result(t, done, "image", 30*time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("image cancelled during its download = %v, want context.Canceled", err)
	}
	lockIsFree(t, state, "image cancelled midway")

	h.SetOptions(fakehydra.Options{})
	var next testutil.SyncBuffer
	if err := f.workspaceWith(t, &next, env).Image(t.Context()); err != nil {
		t.Fatalf("image after the cancelled one: %v\n%s", err, next.String())
	}
	if strings.Contains(next.String(), "waiting") {
		t.Errorf("the next image waited for the cancelled one:\n%s", next.String())
	}
	bases := listDir(t, filepath.Join(state, instance.Bases))
	if len(bases) != 1 {
		t.Fatalf("bases: %v", bases)
	}
	if err := rootFSClean(filepath.Join(state, instance.Bases, bases[0])); err != nil {
		t.Error(err)
	}
	lockIsFree(t, state, "image")
}
