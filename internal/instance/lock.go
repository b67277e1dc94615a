package instance

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"
)

// Lock is the workspace's advisory lock (flock on armdev.lock): while one
// armdev changes a workspace (image, init, start, update, shutdown, kill,
// reset, clean), no other does. The kernel drops it when its process ends,
// however that ends, so it can never go stale.
type Lock struct {
	f *os.File
}

// BusyError says another armdev holds the workspace lock.
type BusyError struct {
	// Holder describes it: "pid 1234: init".
	Holder string
}

// Error tells the user who holds the lock and what they can do.
func (e *BusyError) Error() string {
	return fmt.Sprintf("another armdev is working in this workspace (%s): wait for it to finish, or stop it with Ctrl-C in its terminal", e.Holder)
}

// lockPoll is how often a waiting Acquire tries again.
const lockPoll = 100 * time.Millisecond

// Acquire takes the workspace lock for op (the target's name). When another
// armdev holds it: with wait, it says once "waiting for another armdev in
// this workspace (pid N: op)" through say and waits until the lock is free or
// ctx ends; without wait it returns a *BusyError at once.
func (l Layout) Acquire(ctx context.Context, op string, wait bool, say func(string)) (*Lock, error) {
	if err := os.MkdirAll(l.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("lock the workspace: %w", err)
	}
	f, err := os.OpenFile(l.LockFile(), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock the workspace: %w", err)
	}
	said := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock the workspace (%s): %w", l.LockFile(), err)
		}
		holder := l.holder()
		if !wait {
			f.Close()
			return nil, &BusyError{Holder: holder}
		}
		if !said && say != nil {
			say(fmt.Sprintf("waiting for another armdev in this workspace (%s)", holder))
			said = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("gave up waiting for another armdev in this workspace (%s): %w", holder, ctx.Err())
		case <-time.After(lockPoll):
		}
	}
	// Name the holder for whoever waits next. The lock is already ours, so
	// nobody else writes the file meanwhile.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(fmt.Sprintf("pid %d: %s\n", os.Getpid(), op)), 0)
	}
	return &Lock{f: f}, nil
}

// holder reads who holds the lock; "pid ?" when the holder has not written
// its name yet.
func (l Layout) holder() string {
	data, err := os.ReadFile(l.LockFile())
	if h := strings.TrimSpace(string(data)); err == nil && h != "" {
		return h
	}
	return "pid ?"
}

// Release gives the lock up.
func (lk *Lock) Release() error {
	if lk == nil || lk.f == nil {
		return nil
	}
	_ = lk.f.Truncate(0)
	err := lk.f.Close() // closing the last descriptor drops the flock
	lk.f = nil
	if err != nil {
		return fmt.Errorf("release the workspace lock: %w", err)
	}
	return nil
}
