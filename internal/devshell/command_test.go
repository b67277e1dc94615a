package devshell

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// shells are the login shells a guest user may have: POSIX sh (dash here)
// and bash, as on NixOS.
var shells = []string{"sh", "bash"}

// loginShells adds busybox's sh, the stand-in guest's /bin/sh, when the
// host has busybox.
func loginShells(t *testing.T) []string {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return shells
	}
	sh := filepath.Join(t.TempDir(), "sh") // busybox runs the applet named by argv[0]
	if err := os.Symlink(bb, sh); err != nil {
		t.Fatal(err)
	}
	return append(slices.Clone(shells), sh)
}

// shellName names a login shell for subtests.
func shellName(shell string) string {
	if filepath.IsAbs(shell) {
		return "busybox-sh"
	}
	return shell
}

func TestCommandWithoutDevShellIsTodays(t *testing.T) {
	args := []string{"sh", "-c", `echo "a  b" 'c'`}
	for _, s := range []Spec{{}, {GuestDir: DefaultGuestDir}} {
		if got, want := s.Command(args), `cd /rsonpath 2>/dev/null; sh -c 'echo "a  b" '\''c'\'''`; got != want {
			t.Errorf("Command = %q, want today's %q", got, want)
		}
		if got, want := s.Shell(), `cd /rsonpath 2>/dev/null || echo "armdev: /rsonpath is not mounted" >&2; exec "${SHELL:-/bin/sh}" -l`; got != want {
			t.Errorf("Shell = %q, want today's %q", got, want)
		}
	}
}

func TestCommandEvaluatesOnce(t *testing.T) {
	for _, shell := range loginShells(t) {
		t.Run(shellName(shell), func(t *testing.T) {
			t.Parallel()
			g := newFakeGuest(t)
			g.writeFixture("project/shell.nix", "shell.nix")
			s := g.spec()

			r := g.run(shell, s.Command([]string{"armdev-fixture-tool", "a  b", "it's"}), "")
			want := "armdev-fixture-tool [a  b] [it's]\nFIXTURE_GREETING=hello  \"world\"\nFROM_HOOK=set by shellHook\n"
			if r.code != 0 || r.stdout != want {
				t.Fatalf("first command: exit %d, stdout %q, want %q; stderr:\n%s", r.code, r.stdout, want, r.stderr)
			}
			if !strings.Contains(r.stderr, "armdev: preparing the project's dev shell (first time: this takes a while under emulation)") {
				t.Errorf("the first command should say it prepares the dev shell; stderr: %q", r.stderr)
			}
			if n := g.evaluations(); n != 1 {
				t.Fatalf("%d evaluations after the first command, want 1", n)
			}
			for i := range 4 {
				r := g.run(shell, s.Command([]string{"armdev-fixture-tool", fmt.Sprint(i)}), "")
				if r.code != 0 || !strings.HasPrefix(r.stdout, fmt.Sprintf("armdev-fixture-tool [%d]\n", i)) || r.stderr != "" {
					t.Fatalf("cached command %d: %+v", i, r)
				}
			}
			if n := g.evaluations(); n != 1 {
				t.Fatalf("%d evaluations after five commands, want 1", n)
			}

			// Editing shell.nix changes the key: one more evaluation, and the
			// old key's files go.
			old := s.Key
			g.write("shell.nix", strings.Replace(mustRead(t, filepath.Join(g.project, "shell.nix")), `"hello  \"world\""`, `"edited"`, 1))
			s = g.spec()
			if s.Key == old {
				t.Fatal("editing shell.nix did not change the key")
			}
			for range 2 {
				if r := g.run(shell, s.Command([]string{"armdev-fixture-tool"}), ""); !strings.Contains(r.stdout, "FIXTURE_GREETING=edited\n") {
					t.Fatalf("after the edit: %+v", r)
				}
			}
			if n := g.evaluations(); n != 2 {
				t.Errorf("%d evaluations after editing shell.nix, want 2", n)
			}
			files := g.cacheFiles()
			want2 := []string{s.Key + ".bashrc", s.Key + ".env", s.Key + ".profile", s.Key + ".profile-1-link"}
			if !slices.Equal(files, want2) {
				t.Errorf("cache holds %q, want %q (only the current key's files)", files, want2)
			}
		})
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// trickyShell sets values that quoting usually breaks, as attributes and
// from shellHook, and unsets a session variable.
const trickyShell = `{ pkgs ? import <nixpkgs> { } }:
pkgs.mkShell {
  packages = [ pkgs.armdev-fixture-tool ];
  SPACES = "two  spaces and a trailing one ";
  NEWLINES = "line one\nline two\n\n";
  QUOTES = "it's \"quoted\" ''twice'' '";
  DOLLAR = "\$HOME $(id) ` + "`id`" + ` $$ \${x}";
  BACKSLASH = "a\\b\\\\c\\n";
  UNICODE = "héllo wörld ✓ 日本";
  EMPTY = "";
  shellHook = ''
    export HOOK_VALUE="from hook: it's \"x\" \\ \$HOME ''${SPACES}"
    export HOOK_NEWLINE="a
    b"
    unset SESSION_ONLY
    export CHANGED_BY_HOOK="new"
  '';
}
`

var trickyWant = map[string]string{
	"SPACES":          "two  spaces and a trailing one ",
	"NEWLINES":        "line one\nline two\n\n",
	"QUOTES":          `it's "quoted" ''twice'' '`,
	"DOLLAR":          "$HOME $(id) `id` $$ ${x}",
	"BACKSLASH":       `a\b\\c\n`,
	"UNICODE":         "héllo wörld ✓ 日本",
	"EMPTY":           "",
	"HOOK_VALUE":      `from hook: it's "x" \ $HOME two  spaces and a trailing one `,
	"HOOK_NEWLINE":    "a\nb",
	"CHANGED_BY_HOOK": "new",
	"IN_NIX_SHELL":    "impure",
}

func TestCommandValuesSurviveExactly(t *testing.T) {
	for _, shell := range loginShells(t) {
		t.Run(shellName(shell), func(t *testing.T) {
			t.Parallel()
			g := newFakeGuest(t)
			g.extra = []string{"SESSION_ONLY=from the session", "CHANGED_BY_HOOK=old"}
			g.write("shell.nix", trickyShell)
			s := g.spec()
			if r := g.run(shell, s.Command([]string{"true"}), ""); r.code != 0 || r.stdout != "" {
				t.Fatalf("evaluating: %+v", r)
			}
			for name, want := range trickyWant {
				// Through the cache, as every later command sees it.
				r := g.run(shell, s.Command([]string{"sh", "-c", `printf %s "${` + name + `-(unset)}"`}), "")
				if r.code != 0 || r.stdout != want {
					t.Errorf("%s = %q (exit %d, stderr %q), want %q", name, r.stdout, r.code, r.stderr, want)
				}
			}
			r := g.run(shell, s.Command([]string{"sh", "-c", `printf %s "${SESSION_ONLY-(unset)}"`}), "")
			if r.stdout != "(unset)" {
				t.Errorf("SESSION_ONLY, which shellHook unsets, is %q", r.stdout)
			}
			// PATH: the shell's folders in front of the session's.
			r = g.run(shell, s.Command([]string{"sh", "-c", `printf %s "$PATH"`}), "")
			if !strings.HasSuffix(r.stdout, ":"+g.bin+":/usr/local/bin:/usr/bin:/bin") || !strings.Contains(r.stdout, "-armdev-fixture-tool/bin:") {
				t.Errorf("PATH = %q, want the tool's folder before the session's PATH", r.stdout)
			}
			// ... whatever the session's PATH is when the command runs.
			g.extra = append(g.extra, "PATH=/opt/later/bin:"+g.bin+":/usr/bin:/bin")
			r = g.run(shell, s.Command([]string{"sh", "-c", `printf %s "$PATH"`}), "")
			if !strings.HasSuffix(r.stdout, "-armdev-fixture-tool/bin:/opt/later/bin:"+g.bin+":/usr/bin:/bin") {
				t.Errorf("PATH in a later session = %q, want the tool's folder before that session's PATH", r.stdout)
			}
			// Session and temporary variables are the session's.
			r = g.run(shell, s.Command([]string{"sh", "-c", `printf '%s|' "$HOME" "$TMPDIR" "${NIX_BUILD_TOP-unset}" "$PWD"`}), "")
			if want := g.home + "|" + g.tmp + "|unset|" + g.project + "|"; r.stdout != want {
				t.Errorf("session variables: %q, want %q", r.stdout, want)
			}
			// Nothing of the evaluation is left behind.
			if leftovers, _ := filepath.Glob(filepath.Join(g.home, ".cache", "armdev", "devshell", ".work*")); len(leftovers) > 0 {
				t.Errorf("evaluation left %q", leftovers)
			}
		})
	}
}

func TestCommandKeepsStatusStdinAndStreams(t *testing.T) {
	for _, shell := range loginShells(t) {
		t.Run(shellName(shell), func(t *testing.T) {
			t.Parallel()
			g := newFakeGuest(t)
			g.writeFixture("project/shell.nix", "shell.nix")
			s := g.spec()
			// The evaluating command: stdin is still the command's, stdout
			// only its output.
			r := g.run(shell, s.Command([]string{"sh", "-c", "cat; echo to stderr >&2; exit 7"}), "line 1\nline 2\n")
			if r.code != 7 || r.stdout != "line 1\nline 2\n" || !strings.HasSuffix(r.stderr, "to stderr\n") {
				t.Errorf("evaluating command: %+v", r)
			}
			r = g.run(shell, s.Command([]string{"sh", "-c", "cat; echo to stderr >&2; exit 7"}), "line 3\n")
			if r.code != 7 || r.stdout != "line 3\n" || r.stderr != "to stderr\n" {
				t.Errorf("cached command: %+v", r)
			}
			if r := g.run(shell, s.Command([]string{"sh", "-c", "exit 0"}), ""); r.code != 0 {
				t.Errorf("exit 0: %+v", r)
			}
			r = g.run(shell, s.Command([]string{"printf", "%s|", "", "a b", "$HOME", "*", "x=y"}), "")
			if r.stdout != "|a b|$HOME|*|x=y|" {
				t.Errorf("quoting: %q", r.stdout)
			}
			if r := g.run(shell, s.Command([]string{"no-such-command"}), ""); r.code != 127 {
				t.Errorf("a missing command: exit %d, want 127", r.code)
			}
		})
	}
}

func TestCommandFailedEvaluation(t *testing.T) {
	for _, shell := range loginShells(t) {
		t.Run(shellName(shell), func(t *testing.T) {
			t.Parallel()
			g := newFakeGuest(t)
			g.write("shell.nix", "{ pkgs ? import <nixpkgs> { } }:\npkgs.mkShell {\n  packages = [ pkgs.no-such-tool ];\n}\n")
			s := g.spec()
			marker := filepath.Join(g.home, "ran")
			r := g.run(shell, s.Command([]string{"touch", marker}), "")
			if r.code == 0 || r.stdout != "" {
				t.Errorf("failed evaluation: %+v", r)
			}
			for _, want := range []string{"error: attribute 'no-such-tool' missing", "shell.nix:3:", "armdev: the project's dev shell did not evaluate"} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
				}
			}
			if _, err := os.Stat(marker); err == nil {
				t.Error("the command ran although the evaluation failed")
			}
			if files := g.cacheFiles(); len(files) != 0 {
				t.Errorf("a failed evaluation cached %q", files)
			}
			// Every command tries again: nothing was cached.
			g.run(shell, s.Command([]string{"true"}), "")
			if n := g.evaluations(); n != 2 {
				t.Errorf("%d evaluations after two failing commands, want 2", n)
			}
			// The stand-in's syntax marker fails the same way.
			g.write("shell.nix", "# armdev-standin-fail\n"+mustRead(t, filepath.Join(fixtureDir, "project", "shell.nix")))
			if r := g.run(shell, g.spec().Command([]string{"true"}), ""); r.code == 0 || !strings.Contains(r.stderr, "error: syntax error") {
				t.Errorf("syntax error: %+v", r)
			}
		})
	}
}

func TestCommandOutsideTheShell(t *testing.T) {
	g := newFakeGuest(t)
	g.writeFixture("project/shell.nix", "shell.nix")
	// ARMDEV_NIX_SHELL=0: the lead passes a Spec without a dev shell.
	s := Spec{GuestDir: g.project}
	r := g.run("sh", s.Command([]string{"sh", "-c", `echo "${FIXTURE_GREETING-unset} $PWD"; armdev-fixture-tool`}), "")
	if r.code != 127 || r.stdout != "unset "+g.project+"\n" {
		t.Errorf("outside the dev shell: %+v", r)
	}
	if n := g.evaluations(); n != 0 {
		t.Errorf("%d evaluations outside the dev shell", n)
	}
}

func TestCommandFlake(t *testing.T) {
	g := newFakeGuest(t)
	g.writeFixture("flake-project/flake.nix", "flake.nix")
	s := g.spec()
	if s.Kind != Flake {
		t.Fatalf("kind %v, want flake", s.Kind)
	}
	r := g.run("sh", s.Command([]string{"armdev-fixture-tool"}), "")
	if r.code != 0 || !strings.Contains(r.stdout, "FIXTURE_GREETING=hello from the flake\nFROM_HOOK=set by the flake's shellHook\n") {
		t.Errorf("flake dev shell: %+v", r)
	}
}

func TestShellInteractive(t *testing.T) {
	g := newFakeGuest(t)
	g.writeFixture("project/shell.nix", "shell.nix")
	// The user's ~/.bashrc runs first; the dev shell wins where they differ.
	g.write("../home/.bashrc", "export FROM_BASHRC=yes\nexport FIXTURE_GREETING=from-bashrc\ncd /\n")
	s := g.spec()
	// bash -i reads the session from stdin here, where sshd gives it a PTY.
	r := g.run("sh", s.Shell(), "armdev-fixture-tool x\necho \"bashrc=$FROM_BASHRC pwd=$PWD\"\nexit 3\n")
	if r.code != 3 || !strings.Contains(r.stdout, "armdev-fixture-tool [x]\nFIXTURE_GREETING=hello  \"world\"\nFROM_HOOK=set by shellHook\n") ||
		!strings.Contains(r.stdout, "bashrc=yes pwd="+g.project+"\n") {
		t.Errorf("interactive shell: %+v", r)
	}
	// A second session uses the cache.
	g.run("sh", s.Shell(), "exit\n")
	if n := g.evaluations(); n != 1 {
		t.Errorf("%d evaluations for two sessions, want 1", n)
	}

	// A broken shell.nix: nix's error, then the login shell outside it.
	g.write("shell.nix", "pkgs.mkShell { packages = [ pkgs.nope ]; }\n")
	g.extra = []string{"SHELL=/bin/sh"}
	r = g.run("sh", g.spec().Shell(), "echo \"outside ${FIXTURE_GREETING-unset}\"\n")
	if r.code != 0 || r.stdout != "outside unset\n" || !strings.Contains(r.stderr, "attribute 'nope' missing") ||
		!strings.Contains(r.stderr, "this shell is outside the project's dev shell") {
		t.Errorf("broken dev shell: %+v", r)
	}
}

func TestStatusAndRefresh(t *testing.T) {
	g := newFakeGuest(t)
	g.writeFixture("project/shell.nix", "shell.nix")
	s := g.spec()
	status := func(s Spec) Status {
		t.Helper()
		r := g.run("sh", s.StatusCommand(), "")
		if r.code != 0 {
			t.Fatalf("status command: %+v", r)
		}
		return ParseStatus(r.stdout)
	}
	if st := status(s); st != StatusNone {
		t.Errorf("before any command: %v", st)
	}
	g.run("sh", s.Command([]string{"true"}), "")
	if st := status(s); st != StatusCurrent {
		t.Errorf("after a command: %v", st)
	}
	g.write("shell.nix", mustRead(t, filepath.Join(g.project, "shell.nix"))+"\n# edited\n")
	s = g.spec()
	if st := status(s); st != StatusStale {
		t.Errorf("after an edit: %v", st)
	}
	if st := status(Spec{}); st != StatusOff {
		t.Errorf("without a dev shell: %v", st)
	}

	r := g.run("sh", s.RefreshCommand(), "")
	if r.code != 0 || g.evaluations() != 2 || status(s) != StatusCurrent {
		t.Errorf("refresh: %+v, %d evaluations, status %v", r, g.evaluations(), status(s))
	}
	// Refresh evaluates even when the key did not change.
	g.run("sh", s.RefreshCommand(), "")
	if n := g.evaluations(); n != 3 {
		t.Errorf("%d evaluations after a second refresh, want 3", n)
	}
	g.write("shell.nix", "# armdev-standin-fail\n")
	if r := g.run("sh", g.spec().RefreshCommand(), ""); r.code == 0 || status(g.spec()) != StatusNone {
		t.Errorf("failed refresh: %+v", r)
	}
}

func TestParseStatus(t *testing.T) {
	for out, want := range map[string]Status{"current\n": StatusCurrent, "stale": StatusStale, " none\n": StatusNone, "off\n": StatusOff, "": StatusUnknown, "bash: x": StatusUnknown} {
		if got := ParseStatus(out); got != want {
			t.Errorf("ParseStatus(%q) = %v, want %v", out, got, want)
		}
	}
}

// The cached shell survives garbage collection through its profile, and
// only through it.
func TestCacheSurvivesGarbageCollection(t *testing.T) {
	g := newFakeGuest(t)
	g.writeFixture("project/shell.nix", "shell.nix")
	s := g.spec()
	g.run("sh", s.Command([]string{"true"}), "")
	if r := g.run("sh", "nix-collect-garbage -d", ""); r.code != 0 || !strings.HasPrefix(r.stdout, "0 store paths deleted") {
		t.Fatalf("garbage collection: %+v", r)
	}
	if r := g.run("sh", s.Command([]string{"armdev-fixture-tool"}), ""); r.code != 0 {
		t.Errorf("after garbage collection: %+v", r)
	}
	// Without the profile (as nix-direnv without its root), the tool goes.
	dir := filepath.Join(g.home, ".cache", "armdev", "devshell")
	for _, f := range []string{".profile", ".profile-1-link"} {
		if err := os.Remove(filepath.Join(dir, s.Key+f)); err != nil {
			t.Fatal(err)
		}
	}
	if r := g.run("sh", "nix-store --gc", ""); !strings.HasPrefix(r.stdout, "2 store paths deleted") {
		t.Fatalf("garbage collection without the root: %+v", r)
	}
	if r := g.run("sh", s.Command([]string{"armdev-fixture-tool"}), ""); r.code != 127 {
		t.Errorf("the tool should be gone with its store path: %+v", r)
	}
}

// BenchmarkCommand measures what the fast path adds to a command: `sh -c`
// of today's string against the dev shell's, with an environment the size
// of a real mkShell's (about 80 variables, 12 KiB).
func BenchmarkCommand(b *testing.B) {
	home := b.TempDir()
	s := Spec{Kind: Nix, Files: []string{"shell.nix"}, Key: strings.Repeat("0", 32), GuestDir: home}
	dir := filepath.Join(home, ".cache", "armdev", "devshell")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	var env strings.Builder
	for i := range 80 {
		fmt.Fprintf(&env, "export NIX_VAR_%d='%s'\n", i, strings.Repeat("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-x ", 3))
	}
	env.WriteString("export PATH='/nix/store/0123456789abcdfghijklmnpqrsvwxyz-tool/bin:'\"$PATH\"''\n")
	if err := os.WriteFile(filepath.Join(dir, s.Key+".env"), []byte(env.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	for _, shell := range shells {
		for _, c := range []struct {
			name string
			spec Spec
		}{{"today", Spec{GuestDir: home}}, {"devshell", s}} {
			b.Run(shell+"/"+c.name, func(b *testing.B) {
				cmd := c.spec.Command([]string{"true"})
				env := []string{"HOME=" + home, "PATH=/usr/bin:/bin"}
				for b.Loop() {
					if r, err := runShell(b.Context(), home, env, shell, cmd, ""); err != nil || r.code != 0 {
						b.Fatalf("%+v %v", r, err)
					}
				}
			})
		}
	}
}

// The stand-in guest's sshd (dropbear) refuses exec strings over 9000
// bytes: the dev shell's part must leave room for the command's own.
func TestCommandLeavesRoomForArguments(t *testing.T) {
	s := Spec{Kind: Flake, Files: []string{"flake.nix", "flake.lock"}, Key: strings.Repeat("f", 32), GuestDir: DefaultGuestDir}
	for name, cmd := range map[string]string{"Command": s.Command([]string{"true"}), "Shell": s.Shell(), "RefreshCommand": s.RefreshCommand()} {
		if len(cmd) > 4500 {
			t.Errorf("%s is %d bytes, over 4500 of dropbear's 9000", name, len(cmd))
		}
	}
	if strings.Contains(evaluateScript, "\n#") || strings.Contains(evaluateScript, "\n\t") {
		t.Error("the script sent to the guest still has comments or indentation")
	}
}
