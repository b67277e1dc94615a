package devshell

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The guest's Nix in these tests is the stand-in guest's (nix-standin), run
// on the host under a temporary ARMDEV_STANDIN_ROOT, with the stand-in's
// fixture packages.
var (
	standinScript = filepath.Join("..", "testguest", "guest", "standin", "nix-standin")
	fixtureDir    = filepath.Join("..", "testguest", "guest", "nixpkgs-fixture")
)

// fakeGuest is a temporary "guest": a project folder, a home, the
// stand-in's Nix on PATH and its root.
type fakeGuest struct {
	t       *testing.T
	root    string // ARMDEV_STANDIN_ROOT
	home    string
	project string
	bin     string
	tmp     string
	extra   []string // more environment, NAME=value
}

func newFakeGuest(t *testing.T) *fakeGuest {
	t.Helper()
	for _, tool := range []string{"bash", "sh", "awk", "sha256sum", "readlink", "mktemp"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the stand-in's Nix needs %s: %v", tool, err)
		}
	}
	dir := t.TempDir()
	g := &fakeGuest{
		t: t, root: filepath.Join(dir, "root"), home: filepath.Join(dir, "home"),
		project: filepath.Join(dir, "rsonpath"), bin: filepath.Join(dir, "bin"), tmp: filepath.Join(dir, "tmp"),
	}
	script, err := filepath.Abs(standinScript)
	if err != nil {
		t.Fatal(err)
	}
	pkgs := filepath.Join(g.root, "usr", "share", "armdev-standin", "nixpkgs")
	for _, d := range []string{g.home, g.project, g.bin, g.tmp, pkgs, filepath.Join(g.root, "var", "log")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []string{"nix", "nix-shell", "nix-store", "nix-collect-garbage"} {
		if err := os.Symlink(script, filepath.Join(g.bin, c)); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(filepath.Join(fixtureDir, "pkgs"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(fixtureDir, "pkgs", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(pkgs, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return g
}

// write puts a file in the project.
func (g *fakeGuest) write(name, content string) {
	g.t.Helper()
	p := filepath.Join(g.project, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		g.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		g.t.Fatal(err)
	}
}

// writeFixture copies a file of the stand-in's fixture projects into the
// project.
func (g *fakeGuest) writeFixture(src, name string) {
	g.t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtureDir, filepath.FromSlash(src)))
	if err != nil {
		g.t.Fatal(err)
	}
	g.write(name, string(b))
}

// spec detects the project's dev shell, as the host would, for this guest.
func (g *fakeGuest) spec() Spec {
	g.t.Helper()
	s, err := Detect(g.project)
	if err != nil {
		g.t.Fatal(err)
	}
	s.GuestDir = g.project
	return s
}

// env is the environment of an SSH session in the guest.
func (g *fakeGuest) env() []string {
	return append([]string{
		"PATH=" + g.bin + ":/usr/local/bin:/usr/bin:/bin",
		"HOME=" + g.home, "USER=armdev", "LOGNAME=armdev", "SHELL=/bin/sh", "LANG=C.UTF-8",
		"TMPDIR=" + g.tmp, "SSH_CONNECTION=10.0.2.2 50000 10.0.2.15 22",
		"ARMDEV_STANDIN_ROOT=" + g.root, "ARMDEV_STANDIN_EVAL_SECONDS=0",
	}, g.extra...)
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs an SSH exec string the way sshd does: `SHELL -c CMD` in the home
// folder.
func (g *fakeGuest) run(shell, cmd, stdin string) result {
	g.t.Helper()
	r, err := runShell(g.t.Context(), g.home, g.env(), shell, cmd, stdin)
	if err != nil {
		g.t.Fatal(err)
	}
	return r
}

func runShell(ctx context.Context, dir string, env []string, shell, cmd, stdin string) (result, error) {
	c := exec.CommandContext(ctx, shell, "-c", cmd)
	c.Dir, c.Env, c.Stdin = dir, env, strings.NewReader(stdin)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return result{out.String(), errb.String(), exit.ExitCode()}, nil
	}
	if err != nil {
		return result{}, fmt.Errorf("%s -c: %w", shell, err)
	}
	return result{out.String(), errb.String(), 0}, nil
}

// evaluations counts the stand-in's evaluations so far.
func (g *fakeGuest) evaluations() int {
	g.t.Helper()
	b, err := os.ReadFile(filepath.Join(g.root, "var", "log", "armdev-standin.log"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		g.t.Fatal(err)
	}
	return strings.Count(string(b), " cmd=evaluation ")
}

// cacheFiles lists the user's dev shell cache.
func (g *fakeGuest) cacheFiles() []string {
	g.t.Helper()
	entries, err := os.ReadDir(filepath.Join(g.home, ".cache", "armdev", "devshell"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		g.t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
