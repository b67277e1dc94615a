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

func open() (*workspace.Workspace, error) {
	return workspace.Open(".")
}

// Image prepares the working disk without booting it: resolve, download, u-boot, decompress, inject, overlay.
func Image(ctx context.Context) error {
	w, err := open()
	if err != nil {
		return err
	}
	return w.Image(ctx)
}

// Init sets the machine up: the image pipeline, then the provisioning first boot.
func Init(ctx context.Context) error {
	mg.CtxDeps(ctx, Image)
	w, err := open()
	if err != nil {
		return err
	}
	return w.Provision(ctx)
}

// Start boots the guest in the background and returns when SSH answers.
func Start(ctx context.Context) error {
	w, err := open()
	if err != nil {
		return err
	}
	return w.Start(ctx)
}

// Ssh opens a shell in the guest at /rsonpath, or runs the command given by the justfile's arguments.
func Ssh(ctx context.Context) error {
	w, err := open()
	if err != nil {
		return err
	}
	code, err := w.SSH(ctx, workspace.ArgsFromEnv(os.LookupEnv))
	if err != nil {
		return err
	}
	if code != 0 {
		os.Exit(code) // the remote command's status, with no "Error:" line
	}
	return nil
}

// Update applies share/etc/nixos in the guest with nixos-rebuild switch.
func Update(ctx context.Context) error {
	w, err := open()
	if err != nil {
		return err
	}
	return w.Update(ctx)
}

// Tidy deletes old generations in the guest and collects nix garbage.
func Tidy(ctx context.Context) error {
	w, err := open()
	if err != nil {
		return err
	}
	return w.Tidy(ctx)
}

// Shutdown powers the guest off: poweroff over SSH, then the power button, then quit, then kill.
func Shutdown(ctx context.Context) error {
	w, err := open()
	if err != nil {
		return err
	}
	return w.Shutdown(ctx)
}

// Kill stops this workspace's QEMU at once through its pid file, and nothing else.
func Kill(ctx context.Context) error {
	w, err := open()
	if err != nil {
		return err
	}
	return w.Kill(ctx)
}

// Reset returns the disk to its freshly provisioned state (destructive: asks first).
func Reset(ctx context.Context) error {
	w, err := open()
	if err != nil {
		return err
	}
	return w.Reset(ctx)
}

// Status tells whether the guest runs, its SSH address, accelerator, disk and configuration state.
func Status(ctx context.Context) error {
	w, err := open()
	if err != nil {
		return err
	}
	return w.Status(ctx)
}

// Console attaches the terminal to the guest's serial console (Ctrl-] detaches).
func Console(ctx context.Context) error {
	w, err := open()
	if err != nil {
		return err
	}
	return w.Console(ctx)
}

// SSHConfig writes an OpenSSH config block for the guest and prints how to use it.
func SSHConfig(ctx context.Context) error {
	w, err := open()
	if err != nil {
		return err
	}
	return w.SSHConfig(ctx)
}

// Clean removes base images and downloads that no disk or lock refers to.
func Clean(ctx context.Context) error {
	w, err := open()
	if err != nil {
		return err
	}
	return w.Clean(ctx)
}
