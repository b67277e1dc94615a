package devshell

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// project writes files (slash-separated names) into a new folder.
func project(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func detect(t *testing.T, dir string) Spec {
	t.Helper()
	s, err := Detect(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestDetect(t *testing.T) {
	const flake = `{ outputs = { nixpkgs, ... }: { devShells.aarch64-linux.default = nixpkgs.legacyPackages.aarch64-linux.mkShell { }; }; }`
	for _, c := range []struct {
		name  string
		files map[string]string
		kind  Kind
		want  []string
	}{
		{"nothing", map[string]string{"README.md": "hi"}, None, nil},
		{"shell.nix", map[string]string{"shell.nix": "x"}, Nix, []string{"shell.nix"}},
		{"default.nix", map[string]string{"default.nix": "x"}, Nix, []string{"default.nix"}},
		{"shell.nix before default.nix", map[string]string{"shell.nix": "x", "default.nix": "y"}, Nix, []string{"shell.nix"}},
		{"shell.nix before flake.nix", map[string]string{"shell.nix": "x", "flake.nix": flake}, Nix, []string{"shell.nix"}},
		{"flake with devShells", map[string]string{"flake.nix": flake, "flake.lock": "{}"}, Flake, []string{"flake.nix", "flake.lock"}},
		{"flake without a lock", map[string]string{"flake.nix": flake}, Flake, []string{"flake.nix"}},
		{"flake with the older devShell", map[string]string{"flake.nix": `{ outputs = _: { devShell.aarch64-linux = 1; }; }`}, Flake, []string{"flake.nix"}},
		{"flake without devShells", map[string]string{"flake.nix": `{ outputs = _: { packages.aarch64-linux.default = 1; }; }`, "flake.lock": "{}"}, None, nil},
		{"shell.nix is a folder", map[string]string{"shell.nix/x": "x"}, None, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := detect(t, project(t, c.files))
			if s.Kind != c.kind || !slices.Equal(s.Files, c.want) || s.GuestDir != DefaultGuestDir {
				t.Errorf("Detect = %+v, want kind %v, files %q", s, c.kind, c.want)
			}
			if (s.Key == "") != (c.kind == None) {
				t.Errorf("key %q for kind %v", s.Key, s.Kind)
			}
		})
	}
}

func TestDetectUnreadable(t *testing.T) {
	if os.Getuid() == 0 {
		t.Skip("root reads any file")
	}
	dir := project(t, map[string]string{"shell.nix": "x"})
	if err := os.Chmod(filepath.Join(dir, "shell.nix"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := Detect(dir); err == nil {
		t.Error("an unreadable shell.nix should be an error")
	}
}

func TestDetectFollowsImports(t *testing.T) {
	dir := project(t, map[string]string{
		"shell.nix":             "{ pkgs ? import <nixpkgs> { } }: import ./nix/shell.nix { inherit pkgs; toolchain = ./rust-toolchain.toml; }",
		"nix/shell.nix":         "{ pkgs, toolchain }: pkgs.mkShell { inputsFrom = [ (import ../nix/tools) ]; x = builtins.readFile ../README.md; }",
		"nix/tools/default.nix": "import ./../../shell.nix # a cycle",
		"rust-toolchain.toml":   "[toolchain]\nchannel = \"stable\"\n",
		"README.md":             "# project",
		"unrelated.nix":         "{ }",
	})
	s := detect(t, dir)
	want := []string{"shell.nix", "README.md", "nix/shell.nix", "nix/tools/default.nix", "rust-toolchain.toml"}
	if !slices.Equal(s.Files, want) {
		t.Errorf("Files = %q, want %q", s.Files, want)
	}
	// Paths outside the project, missing files and look-alikes are not followed.
	dir = project(t, map[string]string{
		"shell.nix": `import ../outside.nix // { a = ./missing.nix; b = "x./README.md"; c = https://x.org/./README.md; }`,
		"README.md": "x",
	})
	if err := os.WriteFile(filepath.Join(filepath.Dir(dir), "outside.nix"), []byte("{ }"), 0o644); err != nil {
		t.Fatal(err)
	}
	if s := detect(t, dir); !slices.Equal(s.Files, []string{"shell.nix"}) {
		t.Errorf("Files = %q, want only shell.nix", s.Files)
	}
}

func TestDetectBoundsImports(t *testing.T) {
	files := map[string]string{"shell.nix": "import ./f0.nix"}
	for i := range 2 * maxFiles {
		files[fmt.Sprintf("f%d.nix", i)] = fmt.Sprintf("import ./f%d.nix", i+1)
	}
	if s := detect(t, project(t, files)); len(s.Files) != maxFiles {
		t.Errorf("%d files followed, want the bound %d", len(s.Files), maxFiles)
	}
}

func TestKey(t *testing.T) {
	base := map[string]string{
		"flake.nix":     "{ outputs = _: { devShells.aarch64-linux.default = import ./nix/dev.nix; }; }",
		"flake.lock":    `{"nodes":{}}`,
		"nix/dev.nix":   "mkShell { }",
		"src/lib.rs":    "fn main() {}",
		"unrelated.nix": "{ }",
	}
	dir := project(t, base)
	key := detect(t, dir).Key
	if len(key) != 32 {
		t.Fatalf("key %q: want 32 hex digits", key)
	}
	if again := detect(t, dir).Key; again != key {
		t.Errorf("the key changed between two detections: %s, %s", key, again)
	}

	// touch, or a checkout that rewrites the same bytes, keeps the key.
	future := time.Now().Add(time.Hour)
	for name := range base {
		if err := os.Chtimes(filepath.Join(dir, filepath.FromSlash(name)), future, future); err != nil {
			t.Fatal(err)
		}
	}
	if got := detect(t, dir).Key; got != key {
		t.Errorf("touching the files changed the key")
	}

	for _, c := range []struct {
		file    string
		changes bool
	}{
		{"flake.nix", true}, {"flake.lock", true}, {"nix/dev.nix", true},
		{"src/lib.rs", false}, {"unrelated.nix", false},
	} {
		dir := project(t, base)
		if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(c.file)), []byte(base[c.file]+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := detect(t, dir).Key; (got != key) != c.changes {
			t.Errorf("editing %s: key %s (was %s), want a change: %v", c.file, got, key, c.changes)
		}
	}

	// The same text as shell.nix or default.nix is another shell.
	a := detect(t, project(t, map[string]string{"shell.nix": "x"})).Key
	b := detect(t, project(t, map[string]string{"default.nix": "x"})).Key
	if a == b {
		t.Error("shell.nix and default.nix with the same text have the same key")
	}
}
