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

// unnamedHolder stands for a holder that has not written its name.
const unnamedHolder = "pid ?"

// nameWait bounds how long Acquire waits for a holder to name itself. A
// holder writes its name just after it takes the lock and empties the file
// just before it lets go, so an empty file is a moment's state: reporting
// it would say "pid ?" where a pid was a millisecond away.
const nameWait = time.Second

// Acquire takes the workspace lock for op (the target's name). When another
// armdev holds it: with wait, it says once "waiting for another armdev in
// this workspace (pid N: op)" through say and waits until the lock is free or
// ctx ends; without wait it returns a *BusyError at once. Either way a holder
// that has taken the lock but not yet written its name gets up to nameWait
// to do so, so that the holder is named rather than "pid ?".
func (l Layout) Acquire(ctx context.Context, op string, wait bool, say func(string)) (*Lock, error) {
	if err := os.MkdirAll(l.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("lock the workspace: %w", err)
	}
	f, err := os.OpenFile(l.LockFile(), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock the workspace: %w", err)
	}
	said := false
	var unnamedSince time.Time // when the holder was first seen without a name
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
		if holder == unnamedHolder && ctx.Err() == nil {
			if unnamedSince.IsZero() {
				unnamedSince = time.Now()
			}
			if time.Since(unnamedSince) < nameWait {
				select { // then try the lock, and the name, again
				case <-ctx.Done():
				case <-time.After(10 * time.Millisecond):
				}
				continue
			}
		}
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

// holder reads who holds the lock; unnamedHolder when the holder has not
// written its name yet.
func (l Layout) holder() string {
	data, err := os.ReadFile(l.LockFile())
	if h := strings.TrimSpace(string(data)); err == nil && h != "" {
		return h
	}
	return unnamedHolder
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
