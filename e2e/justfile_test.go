package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestJustfileImported: another project's justfile imports ours; the
// recipes work from there and share that project's root by default.
func TestJustfileImported(t *testing.T) {
	if _, err := exec.LookPath("just"); err != nil {
		if os.Getenv("ARMDEV_E2E") == "1" {
			t.Fatal("just is not installed (npm install -g rust-just)")
		}
		t.Skip("just is not installed")
	}
	project := t.TempDir()
	justfile := "import '" + filepath.Join(repoRoot(t), "justfile") + "'\n"
	if err := os.WriteFile(filepath.Join(project, "justfile"), []byte(justfile), 0o644); err != nil {
		t.Fatal(err)
	}
	list := exec.Command("just", "--list")
	list.Dir = project
	out, err := list.CombinedOutput()
	if err != nil {
		t.Fatalf("just --list: %v\n%s", err, out)
	}
	for _, recipe := range []string{"arm-dev-init", "arm-dev ", "arm-dev-ssh *ARGS", "arm-dev-shutdown", "arm-dev-kill",
		"arm-dev-update", "arm-dev-tidy", "arm-dev-reset", "arm-dev-status", "arm-dev-console", "arm-dev-ssh-config"} {
		if !strings.Contains(string(out), recipe) {
			t.Errorf("just --list lacks %q:\n%s", recipe, out)
		}
	}
	status := exec.Command("just", "arm-dev-status")
	status.Dir = project
	status.Env = append(os.Environ(), "ARMDEV_STATE_DIR="+t.TempDir(), "ARMDEV_SHARE=")
	out, err = status.CombinedOutput()
	if err != nil {
		t.Fatalf("just arm-dev-status: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "share:   "+project+" at /rsonpath") || !strings.Contains(string(out), "stopped") {
		t.Errorf("status from an importing project:\n%s", out)
	}
	bad := exec.Command("just", "arm-dev-status")
	bad.Dir = project
	bad.Env = append(os.Environ(), "ARMDEV_STATE_DIR="+t.TempDir(), "ARMDEV_MEMORY=lots")
	out, err = bad.CombinedOutput()
	if err == nil || !strings.Contains(string(out), `ARMDEV_MEMORY="lots" is not valid`) {
		t.Errorf("a bad setting should stop with one line naming it: %v\n%s", err, out)
	}
}
