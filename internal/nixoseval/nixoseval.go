// Package nixoseval evaluates armdev's guest configuration (share/etc/nixos)
// on the host with a real Nix evaluator, so that tests can check what NixOS
// would refuse or allow in it: the stand-in guest of the end-to-end test has
// no Nix. It is test support: a small module system in Nix (eval.nix) that
// merges the configuration's modules, adds what NixOS always declares and
// runs the assertions of nixpkgs' users-groups.nix.
package nixoseval

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

//go:embed eval.nix
var evalNix []byte

// ErrNoNix is returned (wrapped) when nix-instantiate is not on PATH.
var ErrNoNix = errors.New("nix-instantiate is not installed (Debian: apt-get install nix-bin)")

// User is one declared account after NixOS's defaults were applied.
type User struct {
	Name            string   `json:"name"`
	UID             *int     `json:"uid"`
	IsNormalUser    bool     `json:"isNormalUser"`
	IsSystemUser    bool     `json:"isSystemUser"`
	Group           string   `json:"group"`
	ExtraGroups     []string `json:"extraGroups"`
	Home            string   `json:"home"`
	CreateHome      bool     `json:"createHome"`
	UseDefaultShell bool     `json:"useDefaultShell"`
	Shell           *string  `json:"shell"`
	HashedPassword  *string  `json:"hashedPassword"`
	AuthorizedKeys  []string `json:"authorizedKeys"`
}

// Group is one declared group; GID is nil when NixOS allocates it.
type Group struct {
	Name string `json:"name"`
	GID  *int   `json:"gid"`
}

// OpenSSH is services.openssh as far as login policy goes.
type OpenSSH struct {
	Enable   bool           `json:"enable"`
	Settings map[string]any `json:"settings"`
}

// FileSystem is one 9p entry of fileSystems.
type FileSystem struct {
	Device  string   `json:"device"`
	FSType  string   `json:"fsType"`
	Options []string `json:"options"`
}

// Result is what the evaluation found.
type Result struct {
	// FailedAssertions are the messages NixOS would print under "Failed
	// assertions:" and stop `nixos-rebuild switch` with.
	FailedAssertions []string `json:"failedAssertions"`
	// Traces are the duplicate ids NixOS traces ("Duplicate uid 501").
	Traces             []string              `json:"traces"`
	Users              map[string]User       `json:"users"`
	Groups             map[string]Group      `json:"groups"`
	MutableUsers       bool                  `json:"mutableUsers"`
	OpenSSH            OpenSSH               `json:"openssh"`
	FileSystems        map[string]FileSystem `json:"fileSystems"` // the 9p mounts, by mount point
	AutologinUser      *string               `json:"autologinUser"`
	StateVersion       *string               `json:"stateVersion"`
	Variables          map[string]string     `json:"variables"`
	NixSettings        map[string]any        `json:"nixSettings"`
	WheelNeedsPassword bool                  `json:"wheelNeedsPassword"`
}

// RootHashedPassword is root's users.users.root.hashedPassword, nil when unset.
func (r Result) RootHashedPassword() *string {
	return r.Users["root"].HashedPassword
}

// Eval evaluates configDir/configuration.nix as the guest's /etc/nixos with
// identity as /etc/armdev/identity.nix (nil: no identity file). It works on
// a copy laid out like the guest's /etc, so configuration.nix's
// ../armdev/identity.nix resolves as in the guest and nothing is written
// next to the user's files.
func Eval(ctx context.Context, configDir string, identity []byte) (Result, error) {
	nix, err := exec.LookPath("nix-instantiate")
	if err != nil {
		return Result{}, fmt.Errorf("evaluate %s: %w", configDir, ErrNoNix)
	}
	root, err := os.MkdirTemp("", "armdev-nixoseval-")
	if err != nil {
		return Result{}, fmt.Errorf("evaluate %s: %w", configDir, err)
	}
	defer os.RemoveAll(root)
	etc := filepath.Join(root, "etc")
	if err := os.CopyFS(filepath.Join(etc, "nixos"), os.DirFS(configDir)); err != nil {
		return Result{}, fmt.Errorf("evaluate %s: copy: %w", configDir, err)
	}
	if identity != nil {
		if err := os.MkdirAll(filepath.Join(etc, "armdev"), 0o755); err != nil {
			return Result{}, fmt.Errorf("evaluate %s: %w", configDir, err)
		}
		if err := os.WriteFile(filepath.Join(etc, "armdev", "identity.nix"), identity, 0o644); err != nil {
			return Result{}, fmt.Errorf("evaluate %s: %w", configDir, err)
		}
	}
	evalFile := filepath.Join(root, "eval.nix")
	if err := os.WriteFile(evalFile, evalNix, 0o644); err != nil {
		return Result{}, fmt.Errorf("evaluate %s: %w", configDir, err)
	}
	out, err := instantiate(ctx, nix, evalFile, "--argstr", "configuration", filepath.Join(etc, "nixos", "configuration.nix"))
	if err != nil {
		return Result{}, fmt.Errorf("evaluate %s: %w", configDir, err)
	}
	var r Result
	if err := json.Unmarshal(out, &r); err != nil {
		return Result{}, fmt.Errorf("evaluate %s: read nix-instantiate's answer: %w", configDir, err)
	}
	return r, nil
}

// EvalFile evaluates one Nix file strictly and returns its value as JSON.
func EvalFile(ctx context.Context, path string) ([]byte, error) {
	nix, err := exec.LookPath("nix-instantiate")
	if err != nil {
		return nil, fmt.Errorf("evaluate %s: %w", path, ErrNoNix)
	}
	out, err := instantiate(ctx, nix, path)
	if err != nil {
		return nil, fmt.Errorf("evaluate %s: %w", path, err)
	}
	return out, nil
}

// instantiate runs nix-instantiate --eval on file. `--store dummy://` lets
// an unprivileged user without a Nix daemon evaluate: with the default
// local store, Nix 2.8 (Debian 12) tries to set up /nix/var/nix and fails
// with "could not set permissions on '/nix/var/nix/profiles/per-user'",
// and --readonly-mode does not avoid that. Evaluating needs no store as
// long as nothing is built or copied into it.
func instantiate(ctx context.Context, nix, file string, args ...string) ([]byte, error) {
	argv := append([]string{"--eval", "--strict", "--json", "--store", "dummy://", file}, args...)
	cmd := exec.CommandContext(ctx, nix, argv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return nil, fmt.Errorf("nix-instantiate: %s", msg)
	}
	return stdout.Bytes(), nil
}

// Require skips t when nix-instantiate is missing, and fails it instead
// under ARMDEV_E2E=1, where every prerequisite must be present.
func Require(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("nix-instantiate"); err == nil {
		return
	}
	if os.Getenv("ARMDEV_E2E") == "1" {
		t.Fatalf("ARMDEV_E2E=1 but %v", ErrNoNix)
	}
	t.Skipf("%v: the NixOS configuration is not evaluated", ErrNoNix)
}

// ConfigDir is the repository's share/etc/nixos, found from the calling
// test's working directory (its package's folder).
func ConfigDir(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		cand := filepath.Join(dir, "share", "etc", "nixos")
		if _, err := os.Stat(filepath.Join(cand, "configuration.nix")); err == nil {
			return cand
		} else if !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("share/etc/nixos/configuration.nix not found above the test's folder")
		}
		dir = parent
	}
}
