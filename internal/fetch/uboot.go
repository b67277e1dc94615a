package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/rsonpath/armdev/internal/atomicfile"
)

// DebianUBootPath is where Debian's u-boot-qemu package puts the u-boot for
// QEMU's arm64 virt machine.
const DebianUBootPath = "/usr/lib/u-boot/qemu_arm64/u-boot.bin"

// UBootAttr is the nixpkgs attribute that builds u-boot for QEMU's arm64 virt
// machine.
const UBootAttr = "nixpkgs#pkgsCross.aarch64-multiplatform.ubootQemuAarch64"

// UBootOptions tell FindUBoot where to look.
type UBootOptions struct {
	// Explicit is a u-boot.bin chosen by the user (ARMDEV_UBOOT); when set it
	// must exist and nothing else is tried.
	Explicit string
	// StateDir receives a copy of a nix-built u-boot.bin (StateDir/u-boot.bin),
	// which later calls reuse without running nix. Empty: use the store path.
	StateDir string
	// LookPath finds executables; nil means exec.LookPath.
	LookPath func(string) (string, error)
	// DebianPath is the fallback file; empty means DebianUBootPath.
	DebianPath string
}

// FindUBoot returns the path of a u-boot.bin for QEMU's arm64 virt machine,
// trying in order: opts.Explicit; a copy in opts.StateDir left by an earlier
// nix build; `nix build` of UBootAttr (copied into opts.StateDir); the Debian
// package's file. If none works the error names all three ways to get one.
func FindUBoot(ctx context.Context, opts UBootOptions) (string, error) {
	if opts.Explicit != "" {
		if err := usableFile(opts.Explicit); err != nil {
			return "", fmt.Errorf("ARMDEV_UBOOT=%s: %w: point ARMDEV_UBOOT at a u-boot.bin for qemu_arm64 or unset it", opts.Explicit, err)
		}
		return opts.Explicit, nil
	}
	var cached string
	if opts.StateDir != "" {
		cached = filepath.Join(opts.StateDir, "u-boot.bin")
		if usableFile(cached) == nil {
			return cached, nil
		}
	}
	lookPath := opts.LookPath
	if lookPath == nil {
		lookPath = exec.LookPath
	}
	var nixErr error
	if nix, err := lookPath("nix"); err == nil {
		p, err := nixBuildUBoot(ctx, nix, cached)
		if err == nil {
			return p, nil
		}
		if ctx.Err() != nil {
			return "", err
		}
		nixErr = err
	}
	debian := opts.DebianPath
	if debian == "" {
		debian = DebianUBootPath
	}
	if usableFile(debian) == nil {
		return debian, nil
	}
	msg := "no u-boot for qemu_arm64 found: set ARMDEV_UBOOT to a u-boot.bin, install nix (to build " + UBootAttr + "), or apt-get install u-boot-qemu (for " + debian + ")"
	if nixErr != nil {
		return "", fmt.Errorf("%s; nix failed: %w", msg, nixErr)
	}
	return "", errors.New(msg)
}

// nixBuildUBoot builds u-boot with nix and returns its u-boot.bin, copied to
// copyTo unless copyTo is empty.
func nixBuildUBoot(ctx context.Context, nix, copyTo string) (string, error) {
	cmd := exec.CommandContext(ctx, nix, "--extra-experimental-features", "nix-command flakes",
		"build", "--no-link", "--print-out-paths", UBootAttr)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("nix build %s: %w: %s", UBootAttr, err, lastLine(stderr.String()))
	}
	out := lastLine(stdout.String())
	if out == "" {
		return "", fmt.Errorf("nix build %s printed no output path", UBootAttr)
	}
	bin := filepath.Join(out, "u-boot.bin")
	if err := usableFile(bin); err != nil {
		return "", fmt.Errorf("nix build %s: %w", UBootAttr, err)
	}
	if copyTo == "" {
		return bin, nil
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return "", fmt.Errorf("copy u-boot: %w", err)
	}
	if err := atomicfile.WriteFile(copyTo, data, 0o644); err != nil {
		return "", fmt.Errorf("copy u-boot: %w", err)
	}
	return copyTo, nil
}

// usableFile checks that path is a non-empty regular file.
func usableFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if fi.Size() == 0 {
		return fmt.Errorf("%s is empty", path)
	}
	return nil
}

// lastLine returns the last non-empty line of s, trimmed.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
