package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// recorder is a folder fsync that remembers what it synced and can fail.
type recorder struct {
	mu     sync.Mutex
	synced []string
	err    error
}

func (r *recorder) sync(dir string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.synced = append(r.synced, dir)
	if r.err != nil {
		return r.err
	}
	return syncDir(dir)
}

// requireOnly fails unless dir holds exactly the names want (no temp files).
func requireOnly(t *testing.T, dir string, want ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s holds %q, want %q", dir, got, want)
	}
}

func TestWriteFileReplacesContentAndMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "disk.json")
	if err := os.WriteFile(path, []byte("old content that is longer"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != "new" {
		t.Fatalf("content %q, %v; want %q", got, err, "new")
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %04o, want 0644", fi.Mode().Perm())
	}
	requireOnly(t, dir, "disk.json")
}

func TestWriteFileSyncsTheFolder(t *testing.T) {
	dir := t.TempDir()
	r := &recorder{}
	w := writer{syncFile: (*os.File).Sync, syncDir: r.sync}
	path := filepath.Join(dir, "a", "b", "stamp")
	if err := w.write(path, []byte("x"), 0o644, false); err != nil {
		t.Fatal(err)
	}
	// The new folders' parents, then the file's folder after the rename.
	want := []string{dir, filepath.Join(dir, "a"), filepath.Join(dir, "a", "b")}
	if !slices.Equal(r.synced, want) {
		t.Errorf("synced folders %q, want %q", r.synced, want)
	}
	r.synced = nil
	if err := w.write(path, []byte("y"), 0o644, false); err != nil {
		t.Fatal(err)
	}
	if want := []string{filepath.Join(dir, "a", "b")}; !slices.Equal(r.synced, want) {
		t.Errorf("second write synced %q, want %q", r.synced, want)
	}
}

func TestWriteFileReportsAFailedFolderSync(t *testing.T) {
	dir := t.TempDir()
	r := &recorder{err: errors.New("sync folder: input/output error")}
	path := filepath.Join(dir, "lock.json")
	err := writer{syncFile: (*os.File).Sync, syncDir: r.sync}.write(path, []byte("x"), 0o644, false)
	if err == nil || !strings.Contains(err.Error(), "input/output error") || !strings.Contains(err.Error(), path) {
		t.Fatalf("write with a failing folder sync: %v, want an error naming %s and the cause", err, path)
	}
	requireOnly(t, dir, "lock.json")
}

func TestFailedRenameLeavesNoTempFile(t *testing.T) {
	dir := t.TempDir()
	// A folder in the way of the rename: the write fails after the temp
	// file was written, which must then be removed.
	target := filepath.Join(dir, "sub")
	if err := os.MkdirAll(filepath.Join(target, "child"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := WriteFile(target, []byte("new"), 0o644)
	if err == nil || !strings.HasPrefix(err.Error(), "write "+target+": ") {
		t.Fatalf("WriteFile over a non-empty folder: %v, want an error naming %s", err, target)
	}
	requireOnly(t, dir, "sub")
	requireOnly(t, target, "child")
}

func TestPrivateFileNeverReadableByOthers(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "id_ed25519")
	// The temporary file starts at 0600 (os.CreateTemp), so a private key
	// is never readable by others; the final mode is exactly perm.
	r := &recorder{}
	var tempModes []fs.FileMode
	w := writer{syncFile: (*os.File).Sync, syncDir: func(d string) error {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if fi, err := e.Info(); err == nil {
				tempModes = append(tempModes, fi.Mode().Perm())
			}
		}
		return r.sync(d)
	}}
	if err := w.write(path, []byte("secret"), 0o600, true); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o, want 0600", fi.Mode().Perm())
	}
	for _, m := range tempModes {
		if m&0o077 != 0 {
			t.Errorf("a file in the folder had mode %04o while writing", m)
		}
	}
	requireOnly(t, dir, "id_ed25519")
}

func TestCreateFileNeverReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "id_ed25519")
	if err := CreateFile(path, []byte("first"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := CreateFile(path, []byte("second"), 0o600)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("CreateFile over an existing file: %v, want fs.ErrExist", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "first" {
		t.Errorf("content %q, want the first write's", got)
	}
	requireOnly(t, dir, "id_ed25519")
}

// The data reaches the disk before the new name does: the file is synced
// while path still holds the old content, then the folder after the rename.
func TestFileIsSyncedBeforeTheRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "disk.json")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	var events []string
	w := writer{
		syncFile: func(f *os.File) error {
			seen, _ := os.ReadFile(path)
			events = append(events, "file synced while path holds "+string(seen))
			return f.Sync()
		},
		syncDir: func(d string) error {
			seen, _ := os.ReadFile(path)
			events = append(events, "folder synced while path holds "+string(seen))
			return syncDir(d)
		},
	}
	if err := w.write(path, []byte("new"), 0o644, false); err != nil {
		t.Fatal(err)
	}
	want := []string{"file synced while path holds old", "folder synced while path holds new"}
	if !slices.Equal(events, want) {
		t.Errorf("events %q, want %q", events, want)
	}

	w.syncFile = func(*os.File) error { return errors.New("sync: input/output error") }
	if err := w.write(path, []byte("newer"), 0o644, false); err == nil {
		t.Fatal("write with a failing file sync succeeded")
	}
	if got, _ := os.ReadFile(path); string(got) != "new" {
		t.Errorf("a failed file sync replaced the content with %q", got)
	}
	requireOnly(t, dir, "disk.json")
}
