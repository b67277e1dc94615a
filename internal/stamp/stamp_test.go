package stamp

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func write(t *testing.T, path, content string, mtime time.Time) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func TestCheckTouchEditAndMode(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "init")
	past := time.Now().Add(-time.Hour)
	write(t, filepath.Join(in, "a"), "one", past)
	write(t, filepath.Join(in, "sub", "b"), "two", past)
	os.Chtimes(filepath.Join(in, "sub"), past, past)
	os.Chtimes(in, past, past)
	s := Stamp{Path: filepath.Join(dir, "stamps", "init"), Inputs: []string{in}}

	d0, same, err := s.Check()
	if err != nil || same {
		t.Fatalf("first check: same=%v err=%v", same, err)
	}
	if err := s.Record(d0); err != nil {
		t.Fatal(err)
	}
	if d, same, err := s.Check(); err != nil || !same || d != d0 {
		t.Fatalf("after record: %v %v %v", d, same, err)
	}

	// touch: newer mtime, same content → unchanged, and the stamp is touched.
	future := time.Now().Add(time.Minute)
	os.Chtimes(filepath.Join(in, "a"), future, future)
	if d, same, err := s.Check(); err != nil || !same || d != d0 {
		t.Fatalf("after touch: %v %v %v", d, same, err)
	}
	st, _ := os.Stat(s.Path)
	if st.ModTime().Before(time.Now().Add(-time.Minute)) {
		t.Errorf("stamp not touched: %v", st.ModTime())
	}

	// a real edit → changed, with a new digest.
	write(t, filepath.Join(in, "sub", "b"), "three", time.Now().Add(2*time.Minute))
	d1, same, err := s.Check()
	if err != nil || same || d1 == d0 {
		t.Fatalf("after edit: %v %v %v", d1, same, err)
	}

	// a mode change alone is a change too.
	write(t, filepath.Join(in, "sub", "b"), "two", past)
	if d, _ := Digest(in); d != d0 {
		t.Fatalf("restoring content should restore the digest")
	}
	os.Chmod(filepath.Join(in, "a"), 0o755)
	if d, _ := Digest(in); d == d0 {
		t.Errorf("mode change not seen")
	}
}

func TestMissingInputIsAnError(t *testing.T) {
	dir := t.TempDir()
	s := Stamp{Path: filepath.Join(dir, "st"), Inputs: []string{filepath.Join(dir, "nope")}}
	if _, _, err := s.Check(); err == nil {
		t.Fatal("missing input accepted")
	}
}

func TestCurrentRecordsChanges(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	write(t, in, "a", time.Now().Add(-time.Hour))
	s := Stamp{Path: filepath.Join(dir, "st"), Inputs: []string{in}}
	d0, err := s.Current()
	if err != nil {
		t.Fatal(err)
	}
	if rec, _ := os.ReadFile(s.Path); string(rec) != d0+"\n" {
		t.Errorf("not recorded: %q", rec)
	}
	write(t, in, "b", time.Now().Add(time.Minute))
	if d1, err := s.Current(); err != nil || d1 == d0 {
		t.Errorf("change not seen: %v", err)
	}
}
