package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rsonpath/armdev/internal/harness"
)

// fixtureShell is the stand-in's fixture project: a shell.nix whose
// armdev-fixture-tool exists only inside the dev shell.
func fixtureShell(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "internal", "testguest", "guest", "nixpkgs-fixture", "project", "shell.nix"))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// devShell: in a project with a shell.nix, commands and the interactive
// shell run inside the dev shell, which is evaluated once and then loaded
// from the guest's cache: five commands and a session cost one evaluation,
// an edit one more, tidy keeps the cache, and ARMDEV_NIX_SHELL=0 runs
// outside it. Exit status, quoting, stdin and stdout stay as they are.
func devShell(t *testing.T, ctx context.Context, h *harness.Harness, ssh func(...string) harness.Result) {
	t.Helper()
	evaluations := func() int { return len(filter(standinCalls(t, ssh), " cmd=evaluation ")) }
	before := evaluations()
	shellNix := filepath.Join(h.Share, "shell.nix")
	if err := os.WriteFile(shellNix, fixtureShell(t), 0o644); err != nil {
		t.Fatal(err)
	}

	r := ssh("armdev-fixture-tool", "a", "b  c")
	want := "armdev-fixture-tool [a] [b  c]\nFIXTURE_GREETING=hello  \"world\"\nFROM_HOOK=set by shellHook\n"
	if r.Code != 0 || r.Stdout != want {
		t.Errorf("the dev shell's tool: stdout %q, want %q (%s)", r.Stdout, want, r)
	}
	if !strings.Contains(r.Stderr, "preparing the project's dev shell") {
		t.Errorf("the first command did not say it prepares the dev shell: %s", r)
	}
	if r = ssh("--", "sh", "-c", "exit 7"); r.Code != 7 {
		t.Errorf("exit status inside the dev shell: %s", r)
	}
	if r = ssh("sh", "-c", `echo "a  b"; echo to-stderr >&2`); r.Stdout != "a  b\n" || strings.TrimSpace(r.Stderr) != "to-stderr" {
		t.Errorf("quoting and separate streams inside the dev shell: %s", r)
	}
	if r = h.Just(ctx, strings.NewReader("via stdin\n"), "arm-dev-ssh", "cat"); r.Stdout != "via stdin\n" {
		t.Errorf("stdin inside the dev shell: %s", r)
	}
	if r = ssh("true"); r.Code != 0 || r.Stderr != "" {
		t.Errorf("a warm command: %s", r)
	}
	interactive(t, ctx, h, "just arm-dev-ssh", "exit", []step{
		{"armdev-fixture-tool interactive", regexp.MustCompile(`(?m)^armdev-fixture-tool \[interactive\]\s*$`)},
	})
	if n := evaluations() - before; n != 1 {
		t.Errorf("five commands and a session evaluated the dev shell %d times, want 1", n)
	}
	r = h.Just(ctx, nil, "arm-dev-status")
	if !regexp.MustCompile(`devshell: .*current`).MatchString(r.Stdout) {
		t.Errorf("status does not say the dev shell is cached and current:\n%s", r.Stdout)
	}

	// An edit of shell.nix: one more evaluation, the new value.
	edited := strings.Replace(string(fixtureShell(t)), `hello  \"world\"`, `hello again`, 1)
	if err := os.WriteFile(shellNix, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if r = ssh("armdev-fixture-tool"); !strings.Contains(r.Stdout, "FIXTURE_GREETING=hello again\n") {
			t.Errorf("after editing shell.nix: %s", r)
		}
	}
	if n := evaluations() - before; n != 2 {
		t.Errorf("after an edit of shell.nix: %d evaluations in all, want 2", n)
	}

	// Garbage collection keeps the cached environment (its profile is a root).
	if r = h.Just(ctx, nil, "arm-dev-tidy"); r.Code != 0 {
		t.Fatalf("tidy: %s", r)
	}
	if r = ssh("armdev-fixture-tool"); r.Code != 0 {
		t.Errorf("after tidy the dev shell's tool is gone: %s", r)
	}
	if n := evaluations() - before; n != 2 {
		t.Errorf("tidy cost a new evaluation: %d in all, want 2", n)
	}

	// ARMDEV_NIX_SHELL=0: outside the dev shell.
	h.Extra = []string{"ARMDEV_NIX_SHELL=0"}
	r = ssh("armdev-fixture-tool")
	h.Extra = nil
	if r.Code != 127 {
		t.Errorf("with ARMDEV_NIX_SHELL=0 the dev shell's tool should not be found: %s", r)
	}
}
