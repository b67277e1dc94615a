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
// a backup disk nor the lock refers to, and says how much it freed.
func (w *Workspace) Clean(ctx context.Context) error {
	keep := map[string]bool{}
	if m, ok, err := w.meta(); err != nil {
		return err
	} else if ok {
		keep[m.Base] = true
	}
	backups, _ := filepath.Glob(filepath.Join(w.p.backups(), "*.json"))
	for _, b := range backups {
		var m DiskMeta
		if err := readJSON(b, &m); err == nil {
			keep[m.Base] = true
		}
	}
	if lock, err := fetch.ReadLock(w.p.lock()); err == nil {
		dl := filepath.Join(w.p.downloads(), fmt.Sprintf("%d-%s", lock.BuildID, lock.FileName))
		keep[dl], keep[dl+".verified"], keep[dl+".part"] = true, true, true
	}
	var freed int64
	var removed []string
	for _, dir := range []string{w.p.bases(), w.p.downloads()} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			path := filepath.Join(dir, e.Name())
			if keep[path] || e.IsDir() {
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
