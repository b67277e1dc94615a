package devshell

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Tests of the stand-in guest's Nix (testguest/guest/standin/nix-standin),
// the fake these tests and the end-to-end test rely on: it must behave like
// nix at the interface armdev uses.

func TestStandinPrintDevEnv(t *testing.T) {
	g := newFakeGuest(t)
	g.writeFixture("project/shell.nix", "shell.nix")
	prof := filepath.Join(g.home, "p")
	r := g.run("sh", "cd "+g.project+" && nix --extra-experimental-features 'nix-command flakes' print-dev-env --profile "+prof+" -f shell.nix --impure --arg inNixShell true", "")
	if r.code != 0 {
		t.Fatalf("print-dev-env: %+v", r)
	}
	for _, want := range []string{
		"unset shellHook\n",
		"FIXTURE_GREETING='hello  \"world\"'\nexport FIXTURE_GREETING\n",
		"export NIX_BUILD_TOP=\"$(mktemp -d -t nix-shell.XXXXXX)\"\n",
		"export TMPDIR=\"$NIX_BUILD_TOP\"\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the rc script lacks %q:\n%s", want, r.stdout)
		}
	}
	if !strings.HasSuffix(r.stdout, "eval \"${shellHook:-}\"\n") {
		t.Errorf("the rc script should end by running shellHook:\n%s", r.stdout)
	}

	// The profile: P -> P-1-link -> the environment, a root in gcroots/auto.
	if l, err := os.Readlink(prof); err != nil || l != "p-1-link" {
		t.Errorf("profile link: %q, %v", l, err)
	}
	env, err := os.Readlink(prof + "-1-link")
	storeRE := regexp.MustCompile(`^` + regexp.QuoteMeta(filepath.Join(g.root, "nix", "store")) + `/[0-9a-df-np-sv-z]{32}-nix-shell-env$`)
	if err != nil || !storeRE.MatchString(env) {
		t.Errorf("generation link: %q, %v", env, err)
	}
	roots, _ := filepath.Glob(filepath.Join(g.root, "nix", "var", "nix", "gcroots", "auto", "*"))
	if len(roots) != 1 {
		t.Fatalf("gcroots/auto holds %q, want one root", roots)
	}
	if l, _ := os.Readlink(roots[0]); l != prof+"-1-link" {
		t.Errorf("the auto root points to %q, want %q", l, prof+"-1-link")
	}
	// The same environment again keeps the generation, as nix does.
	g.run("sh", "cd "+g.project+" && nix print-dev-env --profile "+prof+" -f shell.nix", "")
	if _, err := os.Lstat(prof + "-2-link"); err == nil {
		t.Error("an unchanged environment made a second generation")
	}

	log := mustRead(t, filepath.Join(g.root, "var", "log", "armdev-standin.log"))
	logRE := regexp.MustCompile(`(?m)^[0-9]+ uid=[0-9]+ user=\S* cmd=nix args=--extra-experimental-features nix-command flakes print-dev-env --profile \S+ -f shell.nix --impure --arg inNixShell true\n[0-9]+ uid=[0-9]+ user=\S* cmd=evaluation args=` + regexp.QuoteMeta(filepath.Join(g.project, "shell.nix")) + `$`)
	if !logRE.MatchString(log) {
		t.Errorf("call log:\n%s", log)
	}
}

func TestStandinNixShell(t *testing.T) {
	g := newFakeGuest(t)
	g.writeFixture("project/shell.nix", "shell.nix")
	r := g.run("sh", "cd "+g.project+" && nix-shell --run 'armdev-fixture-tool \"a b\"; exit 5'", "")
	if r.code != 5 || r.stdout != "armdev-fixture-tool [a b]\nFIXTURE_GREETING=hello  \"world\"\nFROM_HOOK=set by shellHook\n" {
		t.Errorf("nix-shell --run: %+v", r)
	}
	if r := g.run("sh", "cd "+g.project+" && nix-shell --run 'cat'", "through stdin\n"); r.stdout != "through stdin\n" {
		t.Errorf("nix-shell --run cat: %+v", r)
	}
	if n := g.evaluations(); n != 2 {
		t.Errorf("%d evaluations for two nix-shell calls, want 2", n)
	}
	// Its work folder and rcfile go; NIX_BUILD_TOP (nix-shell.*) is the
	// shell's, as with nix.
	for _, pattern := range []string{"nix-standin.*", "nix-shell-*"} {
		if left, _ := filepath.Glob(filepath.Join(g.tmp, pattern)); len(left) != 0 {
			t.Errorf("nix-shell left %q", left)
		}
	}
}

func TestStandinGarbageCollection(t *testing.T) {
	g := newFakeGuest(t)
	g.writeFixture("project/shell.nix", "shell.nix")
	store := filepath.Join(g.root, "nix", "store")
	// A store path no evaluation made (the system's) is never garbage.
	system := filepath.Join(store, "00000000000000000000000000000000-nixos-system-armdev-standin")
	if err := os.MkdirAll(filepath.Join(system, "sw", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	paths := func() []string {
		t.Helper()
		entries, err := os.ReadDir(store)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return names
	}

	// Without a root, the environment and its package are garbage.
	g.run("sh", "cd "+g.project+" && nix print-dev-env -f shell.nix >/dev/null", "")
	if n := len(paths()); n != 3 {
		t.Fatalf("store after an evaluation: %q", paths())
	}
	r := g.run("sh", "nix-store --gc", "")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "2 store paths deleted, ") || !strings.HasSuffix(r.stdout, " MiB freed\n") {
		t.Errorf("gc without a root: %+v", r)
	}
	if got := paths(); len(got) != 1 || got[0] != filepath.Base(system) {
		t.Errorf("store after gc: %q, want only the system", got)
	}

	// With a profile, both stay, through the environment's reference to the
	// package.
	prof := filepath.Join(g.home, "p")
	g.run("sh", "cd "+g.project+" && nix print-dev-env --profile "+prof+" -f shell.nix >/dev/null", "")
	for _, cmd := range []string{"nix-store --gc", "nix-collect-garbage -d"} {
		if r := g.run("sh", cmd, ""); r.code != 0 || !strings.HasPrefix(r.stdout, "0 store paths deleted, ") {
			t.Errorf("%s with a root: %+v", cmd, r)
		}
	}
	if n := len(paths()); n != 3 {
		t.Errorf("store after gc with a root: %q", paths())
	}
	if r := g.run("sh", "nix-store --gc --print-live", ""); strings.Count(r.stdout, "\n") != 2 {
		t.Errorf("live paths: %+v", r)
	}

	// Deleting the generation link leaves a stale root: gc removes it, then
	// the paths.
	if err := os.Remove(prof + "-1-link"); err != nil {
		t.Fatal(err)
	}
	r = g.run("sh", "nix-collect-garbage", "")
	if !strings.HasPrefix(r.stdout, "2 store paths deleted, ") || !strings.Contains(r.stderr, "removing stale link from ") {
		t.Errorf("gc after the root went: %+v", r)
	}
	if roots, _ := filepath.Glob(filepath.Join(g.root, "nix", "var", "nix", "gcroots", "auto", "*")); len(roots) != 0 {
		t.Errorf("stale roots left: %q", roots)
	}
	if r := g.run("sh", "nix-store --verify", ""); r.code == 0 || !strings.Contains(r.stderr, "does not support '--verify'") {
		t.Errorf("an unsupported nix-store operation: %+v", r)
	}
}

func TestStandinErrors(t *testing.T) {
	g := newFakeGuest(t)
	for _, c := range []struct{ shellNix, want string }{
		{"pkgs.mkShell { packages = [ pkgs.cargo ]; }", "error: attribute 'cargo' missing\n\n       at " + g.project + "/shell.nix:1:29:"},
		{"pkgs.mkShell {\n  A = \"x\"\n  B = 1;\n}", "error: syntax error, unexpected identifier 'B', expecting ';'"},
		{"# armdev-standin-fail\npkgs.mkShell { }", "error: syntax error, unexpected identifier 'armdev-standin-fail'"},
		{"pkgs.mkShell { A = \"${x}\"; }", "does not support string interpolation"},
		{"{ }", "evaluates only pkgs.mkShell"},
	} {
		g.write("shell.nix", c.shellNix)
		r := g.run("sh", "cd "+g.project+" && nix print-dev-env -f shell.nix", "")
		if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%q: %+v, want an error with %q", c.shellNix, r, c.want)
		}
	}
	g.write("flake.nix", "{ outputs = _: { }; }")
	if r := g.run("sh", "cd "+g.project+" && nix print-dev-env .", ""); r.code != 1 || !strings.Contains(r.stderr, "does not provide attribute 'devShells.aarch64-linux.default'") {
		t.Errorf("flake without devShells: %+v", r)
	}
	if r := g.run("sh", "nix print-dev-env --profile", ""); r.code != 1 || !strings.Contains(r.stderr, "flag '--profile' requires 1 argument(s)") {
		t.Errorf("missing argument: %+v", r)
	}
}
