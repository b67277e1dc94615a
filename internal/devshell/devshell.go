// Package devshell runs commands in the guest inside the project's Nix dev
// shell (shell.nix, default.nix or a flake's devShells) while evaluating it
// only once, as nix-direnv does.
//
// The host names the shell: Detect hashes the files that define it into a
// key. The guest keeps, per user, in ~/.cache/armdev/devshell:
//
//	<key>.env      the environment the shell exports (after its shellHook) as
//	               `export NAME='value'` and `unset NAME` lines any sh loads
//	<key>.bashrc   the interactive shell's rcfile: ~/.bashrc, then <key>.env
//	<key>.profile  nix's profile of the environment: a garbage collector root
//
// Each command is one SSH exec string (Spec.Command): when <key>.env is
// readable it is loaded with `.` (no process, no Nix); otherwise
// evaluate.sh runs `nix print-dev-env --profile` once, records what the
// shell exports, and deletes other keys' files. Editing a defining file
// changes the key, so the next command evaluates again.
package devshell

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// DefaultGuestDir is where the guest mounts the project.
const DefaultGuestDir = "/rsonpath"

// CacheDir is the guest user's cache of evaluated dev shells, as the guest's
// shell spells it.
const CacheDir = "$HOME/.cache/armdev/devshell"

// keyVersion is hashed into every key: changing how the cache is written
// (evaluate.sh) must change it, so guests evaluate again.
const keyVersion = "armdev-devshell-1"

// maxFiles bounds how many files the key follows imports into.
const maxFiles = 64

// Kind is how the project defines its dev shell.
type Kind int

const (
	// None: no dev shell; commands run as they always did.
	None Kind = iota
	// Nix: shell.nix or default.nix, evaluated as nix-shell would.
	Nix
	// Flake: flake.nix with a devShells output.
	Flake
)

// String names the kind as the guest's evaluate.sh takes it.
func (k Kind) String() string {
	switch k {
	case Nix:
		return "nix"
	case Flake:
		return "flake"
	default:
		return "none"
	}
}

// Spec is a project's dev shell as the host sees it.
type Spec struct {
	// Kind is how the shell is defined; None means no dev shell.
	Kind Kind
	// Files are the defining files hashed into Key, relative to the
	// project and slash-separated: the entry point (shell.nix, default.nix
	// or flake.nix) first, then flake.lock and the files they import.
	Files []string
	// Key names the evaluated shell in the guest's cache: a hash of Kind and
	// of the names and contents of Files.
	Key string
	// GuestDir is the project's folder in the guest; empty means
	// DefaultGuestDir.
	GuestDir string
}

// String describes the spec for status lines.
func (s Spec) String() string {
	if s.Kind == None {
		return "no dev shell"
	}
	key := s.Key
	if len(key) > 12 {
		key = key[:12]
	}
	return fmt.Sprintf("%s (key %s)", strings.Join(s.Files, ", "), key)
}

// Detect finds the dev shell of the project in shareDir (the host folder the
// guest mounts at DefaultGuestDir): shell.nix, else default.nix, else a
// flake.nix that mentions devShells (or the older devShell). Its key covers
// the entry file, flake.lock, and the files they import by relative path
// (./x.nix, ../y/z.nix, ./dir for dir/default.nix) inside the project,
// followed into .nix files up to maxFiles: best effort, since Nix can
// compute paths no scan sees (the refresh command covers those).
func Detect(shareDir string) (Spec, error) {
	s := Spec{GuestDir: DefaultGuestDir}
	for _, c := range []struct {
		name string
		kind Kind
	}{{"shell.nix", Nix}, {"default.nix", Nix}, {"flake.nix", Flake}} {
		st, err := os.Stat(filepath.Join(shareDir, c.name))
		if errors.Is(err, fs.ErrNotExist) || err == nil && !st.Mode().IsRegular() {
			continue
		}
		if err != nil {
			return Spec{}, fmt.Errorf("look for the project's %s: %w", c.name, err)
		}
		if c.kind == Flake {
			b, err := os.ReadFile(filepath.Join(shareDir, c.name))
			if err != nil {
				return Spec{}, fmt.Errorf("read the project's %s: %w", c.name, err)
			}
			// nix print-dev-env reads devShells.<system>.default, then
			// devShell.<system>; a flake with neither has no dev shell.
			if !strings.Contains(string(b), "devShell") {
				break
			}
		}
		s.Kind, s.Files = c.kind, []string{c.name}
		break
	}
	if s.Kind == None {
		return s, nil
	}
	contents, err := collect(shareDir, s.Kind, s.Files[0])
	if err != nil {
		return Spec{}, err
	}
	names := make([]string, 0, len(contents))
	for n := range contents {
		if n != s.Files[0] {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	s.Files = append(s.Files, names...)

	h := sha256.New()
	fmt.Fprintf(h, "%s\nkind %s\n", keyVersion, s.Kind)
	for _, n := range s.Files {
		fmt.Fprintf(h, "file %q %d\n", n, len(contents[n]))
		h.Write(contents[n])
	}
	s.Key = hex.EncodeToString(h.Sum(nil))[:32]
	return s, nil
}

// relPathRE finds Nix path literals relative to the file: ./x, ../y/z. The
// character before must not belong to a path (group 1).
var relPathRE = regexp.MustCompile(`(^|[^A-Za-z0-9._+\-/])(\.\.?(?:/[A-Za-z0-9._+\-]+)+)`)

// collect reads the defining files: entry, flake.lock for flakes, and what
// they import inside shareDir. The result maps slash-separated names
// relative to shareDir to contents.
func collect(shareDir string, kind Kind, entry string) (map[string][]byte, error) {
	root, err := filepath.Abs(shareDir)
	if err != nil {
		return nil, fmt.Errorf("find the project folder: %w", err)
	}
	files := map[string][]byte{}
	queue := []string{entry}
	if kind == Flake {
		if b, err := os.ReadFile(filepath.Join(root, "flake.lock")); err == nil {
			files["flake.lock"] = b
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("read the project's flake.lock: %w", err)
		}
	}
	for len(queue) > 0 && len(files) < maxFiles {
		name := queue[0]
		queue = queue[1:]
		if _, seen := files[name]; seen {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(name)))
		if err != nil {
			if name == entry {
				return nil, fmt.Errorf("read the project's %s: %w", name, err)
			}
			continue // an import we cannot read is nix's to report
		}
		files[name] = b
		if !strings.HasSuffix(name, ".nix") {
			continue
		}
		for _, m := range relPathRE.FindAllSubmatch(b, -1) {
			if imp, ok := resolve(root, path.Dir(name), string(m[2])); ok {
				queue = append(queue, imp)
			}
		}
	}
	return files, nil
}

// resolve turns a path literal in a file of folder dir into a project file
// name: a regular file, or a folder's default.nix (what `import ./dir`
// reads). Paths outside the project are not the guest's to see.
func resolve(root, dir, literal string) (string, bool) {
	name := path.Clean(path.Join(dir, literal))
	if name == ".." || strings.HasPrefix(name, "../") {
		return "", false
	}
	st, err := os.Stat(filepath.Join(root, filepath.FromSlash(name)))
	if err != nil {
		return "", false
	}
	if st.IsDir() {
		name = path.Join(name, "default.nix")
		if st, err = os.Stat(filepath.Join(root, filepath.FromSlash(name))); err != nil {
			return "", false
		}
	}
	if !st.Mode().IsRegular() {
		return "", false
	}
	return name, true
}
