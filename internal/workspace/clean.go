package workspace

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/rsonpath/armdev/internal/disk"
	"github.com/rsonpath/armdev/internal/fetch"
	"github.com/rsonpath/armdev/internal/progress"
)

// Clean removes prepared bases and downloads that neither the working disk,
// a backup disk nor the lock uses, and says how much it freed. What a disk
// uses is read from the disk itself (its backing chain) and compared as
// files, so no spelling of a path can make a used base look unused; when a
// disk's chain cannot be read, nothing is removed.
func (w *Workspace) Clean(ctx context.Context) error {
	lk, err := w.lock(ctx, "clean")
	if err != nil {
		return err
	}
	defer lk.Release()
	disks, _ := filepath.Glob(filepath.Join(w.l.Backups(), "*.qcow2"))
	if exists(w.l.Disk()) {
		disks = append(disks, w.l.Disk())
	}
	var used []os.FileInfo
	for _, d := range disks {
		chain, err := disk.BackingChain(ctx, w.Cfg.QEMUImg, d)
		if err != nil {
			return fmt.Errorf("cannot tell which base %s uses, so clean removes nothing: %w", d, err)
		}
		for _, f := range chain {
			if st, err := os.Stat(f); err == nil {
				used = append(used, st)
			}
		}
	}
	keep := map[string]bool{}
	if lock, err := fetch.ReadLock(w.l.HydraLock()); err == nil {
		dl := filepath.Base(w.downloadPath(lock))
		keep[dl], keep[dl+".verified"], keep[dl+".part"] = true, true, true
	}
	var freed int64
	var removed []string
	for _, dir := range []string{w.l.Bases(), w.l.Downloads()} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			path := filepath.Join(dir, e.Name())
			if keep[e.Name()] || e.IsDir() || inUse(path, used) {
				continue
			}
			size, _ := disk.Allocated(path)
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("clean: %w", err)
			}
			freed += size
			if !strings.HasSuffix(path, ".verified") {
				removed = append(removed, e.Name())
			}
		}
	}
	for _, r := range removed {
		w.say("removed %s", r)
	}
	w.say("freed %s", progress.Bytes(freed))
	return nil
}

// inUse reports whether path is one of the files in used.
func inUse(path string, used []os.FileInfo) bool {
	st, err := os.Stat(path)
	if err != nil {
		return false
	}
	for _, u := range used {
		if os.SameFile(st, u) {
			return true
		}
	}
	return false
}
