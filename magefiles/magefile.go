//go:build mage

// Targets of armdev, an emulated ARM64 NixOS machine for rsonpath (see README.md).
package main

// Each target opens the workspace described by the ARMDEV_* settings and
// runs one step of internal/workspace, whose build graph decides what is
// rebuilt; this file only names the targets and their order.

import (
	"context"
	"os"

	"github.com/magefile/mage/mg"

	"github.com/rsonpath/armdev/internal/workspace"
)

// Default is what a bare `mage` runs.
var Default = Status

// run opens the workspace and runs one of its steps.
func run(ctx context.Context, step func(*workspace.Workspace, context.Context) error) error {
	w, err := workspace.Open(".")
	if err != nil {
		return err
	}
	return step(w, ctx)
}

// Image prepares the working disk without booting it: resolve, download, u-boot, decompress, inject, overlay.
func Image(ctx context.Context) error { return run(ctx, (*workspace.Workspace).Image) }

// Init sets the machine up: the image pipeline, then the provisioning first boot.
func Init(ctx context.Context) error {
	mg.CtxDeps(ctx, Image)
	return run(ctx, (*workspace.Workspace).Provision)
}

// Start boots the guest in the background and returns when SSH answers.
func Start(ctx context.Context) error { return run(ctx, (*workspace.Workspace).Start) }

// Ssh opens a shell in the guest at /rsonpath, or runs the command given by the justfile's arguments.
func Ssh(ctx context.Context) error {
	return run(ctx, func(w *workspace.Workspace, ctx context.Context) error {
		code, err := w.SSH(ctx, workspace.ArgsFromEnv(os.LookupEnv))
		if err == nil && code != 0 {
			os.Exit(code) // the remote command's status, with no "Error:" line
		}
		return err
	})
}

// ShellRefresh evaluates the project's dev shell in the guest anew, for changes its cache key cannot see.
func ShellRefresh(ctx context.Context) error {
	return run(ctx, (*workspace.Workspace).ShellRefresh)
}

// Update applies share/etc/nixos in the guest with nixos-rebuild switch.
func Update(ctx context.Context) error { return run(ctx, (*workspace.Workspace).Update) }

// Tidy deletes old generations in the guest and collects nix garbage.
func Tidy(ctx context.Context) error { return run(ctx, (*workspace.Workspace).Tidy) }

// Shutdown powers the guest off: poweroff over SSH, then the power button, then quit, then kill.
func Shutdown(ctx context.Context) error { return run(ctx, (*workspace.Workspace).Shutdown) }

// Kill stops this workspace's QEMU at once (found by its pid file, or by its name and disk), and nothing else.
func Kill(ctx context.Context) error { return run(ctx, (*workspace.Workspace).Kill) }

// Reset returns the disk to its freshly provisioned state (destructive: asks first).
func Reset(ctx context.Context) error { return run(ctx, (*workspace.Workspace).Reset) }

// Status tells whether the guest runs, its SSH address, accelerator, disk, configuration and dev shell state.
func Status(ctx context.Context) error { return run(ctx, (*workspace.Workspace).Status) }

// Console attaches the terminal to the guest's serial console (Ctrl-] detaches).
func Console(ctx context.Context) error { return run(ctx, (*workspace.Workspace).Console) }

// SSHConfig writes an OpenSSH config block for the guest and prints how to use it.
func SSHConfig(ctx context.Context) error { return run(ctx, (*workspace.Workspace).SSHConfig) }

// Clean removes base images and downloads that no disk or lock uses.
func Clean(ctx context.Context) error { return run(ctx, (*workspace.Workspace).Clean) }
