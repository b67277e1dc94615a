package fetch_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rsonpath/armdev/internal/fetch"
)

func writeFile(t *testing.T, path string, data []byte, perm os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, perm); err != nil {
		t.Fatal(err)
	}
}

func noNix(string) (string, error) { return "", exec.ErrNotFound }

// fakeNix writes a `nix` script that logs its arguments and prints a store
// path holding a u-boot.bin (or fails when fail is set).
func fakeNix(t *testing.T, fail bool) (nix, argsLog string, uboot []byte) {
	t.Helper()
	dir := t.TempDir()
	out := filepath.Join(dir, "store", "abc-u-boot-qemu")
	uboot = []byte("u-boot built by nix")
	writeFile(t, filepath.Join(out, "u-boot.bin"), uboot, 0o444)
	argsLog = filepath.Join(dir, "args")
	script := "#!/bin/sh\nprintf '%s\\n' \"$*\" >> " + argsLog + "\n"
	if fail {
		script += "echo 'error: flake nixpkgs not found' >&2\nexit 1\n"
	} else {
		script += "echo 'building...' >&2\necho " + out + "\n"
	}
	nix = filepath.Join(dir, "bin", "nix")
	writeFile(t, nix, []byte(script), 0o755)
	return nix, argsLog, uboot
}

func TestFindUBootExplicit(t *testing.T) {
	p := filepath.Join(t.TempDir(), "my-u-boot.bin")
	writeFile(t, p, []byte("mine"), 0o644)
	got, err := fetch.FindUBoot(t.Context(), fetch.UBootOptions{Explicit: p, LookPath: noNix})
	if err != nil || got != p {
		t.Fatalf("FindUBoot = %q, %v; want %q", got, err, p)
	}
	_, err = fetch.FindUBoot(t.Context(), fetch.UBootOptions{Explicit: p + ".missing", LookPath: noNix})
	if err == nil || !strings.Contains(err.Error(), "ARMDEV_UBOOT") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("FindUBoot with a missing explicit file: %v", err)
	}
}

func TestFindUBootNix(t *testing.T) {
	nix, argsLog, uboot := fakeNix(t, false)
	state := filepath.Join(t.TempDir(), "state")
	debian := filepath.Join(t.TempDir(), "debian-u-boot.bin")
	writeFile(t, debian, []byte("debian"), 0o644)
	opts := fetch.UBootOptions{
		StateDir:   state,
		DebianPath: debian,
		LookPath: func(name string) (string, error) {
			if name == "nix" {
				return nix, nil
			}
			return "", exec.ErrNotFound
		},
	}
	for range 2 {
		got, err := fetch.FindUBoot(t.Context(), opts)
		if err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(state, "u-boot.bin"); got != want {
			t.Fatalf("FindUBoot = %q, want the copy %q", got, want)
		}
		data, err := os.ReadFile(got)
		if err != nil || !bytes.Equal(data, uboot) {
			t.Fatalf("copy holds %q (%v), want %q", data, err, uboot)
		}
	}
	args, err := os.ReadFile(argsLog)
	if err != nil {
		t.Fatal(err)
	}
	want := "--extra-experimental-features nix-command flakes build --no-link --print-out-paths " + fetch.UBootAttr + "\n"
	if string(args) != want {
		t.Errorf("nix ran with\n%q\nwant once with\n%q", args, want)
	}
}

func TestFindUBootDebianFallback(t *testing.T) {
	debian := filepath.Join(t.TempDir(), "u-boot.bin")
	writeFile(t, debian, []byte("debian"), 0o644)
	got, err := fetch.FindUBoot(t.Context(), fetch.UBootOptions{StateDir: t.TempDir(), DebianPath: debian, LookPath: noNix})
	if err != nil || got != debian {
		t.Fatalf("FindUBoot = %q, %v; want %q", got, err, debian)
	}

	// A failing nix falls back to Debian's file too.
	nix, _, _ := fakeNix(t, true)
	lookNix := func(string) (string, error) { return nix, nil }
	got, err = fetch.FindUBoot(t.Context(), fetch.UBootOptions{StateDir: t.TempDir(), DebianPath: debian, LookPath: lookNix})
	if err != nil || got != debian {
		t.Fatalf("FindUBoot with failing nix = %q, %v; want %q", got, err, debian)
	}
}

func TestFindUBootNothingNamesAllWays(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "absent", "u-boot.bin")
	_, err := fetch.FindUBoot(t.Context(), fetch.UBootOptions{StateDir: t.TempDir(), DebianPath: missing, LookPath: noNix})
	if err == nil {
		t.Fatal("FindUBoot succeeded with no u-boot anywhere")
	}
	for _, w := range []string{"ARMDEV_UBOOT", "install nix", "apt-get install u-boot-qemu"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}

	nix, _, _ := fakeNix(t, true)
	_, err = fetch.FindUBoot(t.Context(), fetch.UBootOptions{DebianPath: missing, LookPath: func(string) (string, error) { return nix, nil }})
	if err == nil || !strings.Contains(err.Error(), "flake nixpkgs not found") || !strings.Contains(err.Error(), "ARMDEV_UBOOT") {
		t.Errorf("FindUBoot with failing nix and no Debian file: %v", err)
	}
}
