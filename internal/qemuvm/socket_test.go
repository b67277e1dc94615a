package qemuvm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSocketPathShort(t *testing.T) {
	want := filepath.Join(t.TempDir(), "qmp.sock")
	got, err := SocketPath(want)
	if err != nil || got != want {
		t.Fatalf("SocketPath(%q) = %q, %v", want, got, err)
	}
}

func TestSocketPathLong(t *testing.T) {
	runtimeDir := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", runtimeDir)
	deep := filepath.Join(t.TempDir(), strings.Repeat("a-very-long-folder-name/", 6), ".armdev")
	want := filepath.Join(deep, "qmp.sock")
	if len(want) <= 107 {
		t.Fatalf("test path too short: %d", len(want))
	}
	got, err := SocketPath(want)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) > 107 || filepath.Base(got) != "qmp.sock" || !strings.HasPrefix(got, runtimeDir+"/armdev-") {
		t.Errorf("fallback %q", got)
	}
	fi, err := os.Stat(filepath.Dir(got))
	if err != nil || fi.Mode().Perm() != 0o700 || !fi.IsDir() {
		t.Fatalf("fallback dir: %v %v", fi.Mode(), err)
	}

	// Deterministic: the same answer again, even if the directory was opened up.
	if err := os.Chmod(filepath.Dir(got), 0o755); err != nil {
		t.Fatal(err)
	}
	again, err := SocketPath(want)
	if err != nil || again != got {
		t.Errorf("second call %q, %v; want %q", again, err, got)
	}
	if fi, _ := os.Stat(filepath.Dir(got)); fi.Mode().Perm() != 0o700 {
		t.Errorf("mode not restored: %v", fi.Mode())
	}
	// A different workspace gets a different directory.
	other, err := SocketPath(filepath.Join(deep, "x", "..", "..", "other", "qmp.sock"))
	if err != nil || filepath.Dir(other) == filepath.Dir(got) {
		t.Errorf("other workspace %q, %v", other, err)
	}
	// Siblings share the directory.
	serial, err := SocketPath(filepath.Join(deep, "serial.sock"))
	if err != nil || filepath.Dir(serial) != filepath.Dir(got) {
		t.Errorf("serial socket %q, %v", serial, err)
	}
}

func TestSocketPathRefusesFile(t *testing.T) {
	runtimeDir := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", runtimeDir)
	want := filepath.Join("/", strings.Repeat("x", 120), "qmp.sock")
	got, err := SocketPath(want)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(got)
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := SocketPath(want); err == nil {
		t.Error("a file in place of the socket directory was accepted")
	}
}

// When the fallback is too long too, the hint names the variable that chose it:
// XDG_RUNTIME_DIR wins over TMPDIR.
func TestSocketPathHintNamesVariable(t *testing.T) {
	want := filepath.Join("/", strings.Repeat("x", 120), "qmp.sock")
	long := filepath.Join(t.TempDir(), strings.Repeat("y", 100))
	t.Setenv("TMPDIR", t.TempDir())
	t.Setenv("XDG_RUNTIME_DIR", long)
	if _, err := SocketPath(want); err == nil || !strings.HasSuffix(err.Error(), "set XDG_RUNTIME_DIR to a short folder") {
		t.Errorf("long XDG_RUNTIME_DIR: %v", err)
	}
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("TMPDIR", long)
	if _, err := SocketPath(want); err == nil || !strings.HasSuffix(err.Error(), "set TMPDIR to a short folder") {
		t.Errorf("long TMPDIR: %v", err)
	}
}
