// Package atomicfile writes files so that a crash or a power cut leaves
// either the old content or the new one, never a truncated or empty file.
//
// Each write goes to a temporary file in the destination's folder, which is
// fsynced before it is renamed (or linked) into place, and the folder is
// fsynced afterwards so that the new name itself survives a crash. Without
// the first fsync a crash can leave the new name pointing at an empty file
// (how a workspace's disk.json got lost); without the second the rename
// itself may be forgotten. google/renameio does the first but not the second,
// hence this small package.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// WriteFile replaces path with data, creating path's folder (mode 0755) when
// it is missing. The file has mode perm from the moment its name appears; the
// temporary file is created with mode 0600, so content meant to be private
// is never readable by others, not even for a moment.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return writer{syncFile: (*os.File).Sync, syncDir: syncDir}.write(path, data, perm, false)
}

// CreateFile writes data to path like WriteFile, but never replaces an
// existing file: if path exists (another process may have just created it)
// it returns an error that wraps fs.ErrExist and leaves path untouched.
func CreateFile(path string, data []byte, perm os.FileMode) error {
	return writer{syncFile: (*os.File).Sync, syncDir: syncDir}.write(path, data, perm, true)
}

// writer holds the two fsyncs, which tests replace to see that they happen
// and in which order.
type writer struct {
	syncFile func(*os.File) error
	syncDir  func(dir string) error
}

func (w writer) write(path string, data []byte, perm os.FileMode, exclusive bool) error {
	dir := filepath.Dir(path)
	if err := w.mkdirAll(dir); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// After a successful rename this removes nothing; after a link it
	// removes the temporary name, leaving the file under path only.
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if err == nil {
		err = w.syncFile(tmp)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if exclusive {
		// link(2) fails with EEXIST instead of replacing, which rename(2)
		// cannot do portably.
		err = os.Link(tmp.Name(), path)
	} else {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := w.syncDir(dir); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// mkdirAll creates dir and its missing parents, and fsyncs the folder that
// holds each new one so that the new folders survive a crash too.
func (w writer) mkdirAll(dir string) error {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); !errors.Is(err, fs.ErrNotExist) {
			break
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := w.syncDir(filepath.Dir(missing[i])); err != nil {
			return err
		}
	}
	return nil
}

// syncDir fsyncs a folder, making the names created in it durable. Linux
// wants the folder opened read-only for that.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync folder: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	// Some file systems (a few FUSE and network ones) cannot sync a folder
	// and say so; the write itself succeeded and nothing more can be done.
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	return nil
}
