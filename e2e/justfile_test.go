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

	// Relative settings typed in a subfolder of the importing project start
	// there, not in the armdev checkout that .just-run changes into.
	realProject, err := filepath.EvalSymlinks(project) // just reports the folder it runs in with symlinks resolved
	if err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(realProject, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	sshConfig := exec.Command("just", "arm-dev-ssh-config")
	sshConfig.Dir = sub
	sshConfig.Env = append(os.Environ(), "ARMDEV_STATE_DIR=state", "ARMDEV_SHARE=..", "ARMDEV_CALLER_DIR=/stale/value")
	out, err = sshConfig.CombinedOutput()
	if err != nil {
		t.Fatalf("just arm-dev-ssh-config with a relative ARMDEV_STATE_DIR: %v\n%s", err, out)
	}
	written := filepath.Join(sub, "state", "ssh", "config")
	if _, err := os.Stat(written); err != nil || !strings.Contains(string(out), "wrote "+written) {
		t.Errorf("a relative ARMDEV_STATE_DIR typed in %s should put the ssh config at %s (%v):\n%s", sub, written, err, out)
	}
	status = exec.Command("just", "arm-dev-status")
	status.Dir = sub
	status.Env = append(os.Environ(), "ARMDEV_STATE_DIR=state", "ARMDEV_SHARE=..")
	out, err = status.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "share:   "+realProject+" at /rsonpath") {
		t.Errorf("ARMDEV_SHARE=.. typed in %s should share %s: %v\n%s", sub, realProject, err, out)
	}

	bad := exec.Command("just", "arm-dev-status")
	bad.Dir = project
	bad.Env = append(os.Environ(), "ARMDEV_STATE_DIR="+t.TempDir(), "ARMDEV_MEMORY=lots")
	out, err = bad.CombinedOutput()
	if err == nil || !strings.Contains(string(out), `ARMDEV_MEMORY="lots" is not valid`) {
		t.Errorf("a bad setting should stop with one line naming it: %v\n%s", err, out)
	}
}
