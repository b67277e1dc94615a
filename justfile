# armdev: an emulated ARM64 NixOS machine for rsonpath development.
#
# Works here and when imported from another project's justfile
# (`import 'path/to/armdev/justfile'`): then the folder shared into the guest
# at /rsonpath defaults to that project's root.

armdev_dir := source_directory()

# The project shared into the guest at /rsonpath.
export ARMDEV_SHARE := if env("ARMDEV_SHARE", "") == "" { justfile_directory() } else { env("ARMDEV_SHARE") }

# Where just was run from: relative paths in ARMDEV_* settings start here,
# since .just-run changes into the armdev checkout. (invocation_directory()
# is the folder just was started in, also when this file is imported.)
export ARMDEV_CALLER_DIR := invocation_directory()


# Set up the machine: download, prepare the disk, provision it on first boot.
arm-dev-init:
    @{{quote(armdev_dir / ".just-run")}} init

# Start the guest in the background; returns when SSH answers.
arm-dev:
    @{{quote(armdev_dir / ".just-run")}} start

# A shell in the guest at /rsonpath, or run one command: just arm-dev-ssh uname -a
[positional-arguments]
[no-exit-message]
arm-dev-ssh *ARGS:
    @{{quote(armdev_dir / ".just-run")}} ssh "$@"

# Evaluate the project's dev shell in the guest anew (after changes its cache key cannot see).
arm-dev-shell-refresh:
    @{{quote(armdev_dir / ".just-run")}} shellrefresh

# Apply share/etc/nixos in the guest (nixos-rebuild switch).
arm-dev-update:
    @{{quote(armdev_dir / ".just-run")}} update

# Free disk space in the guest: delete old generations, collect nix garbage.
arm-dev-tidy:
    @{{quote(armdev_dir / ".just-run")}} tidy

# Power the guest off gracefully (SSH, then ACPI button, then quit, then kill).
arm-dev-shutdown:
    @{{quote(armdev_dir / ".just-run")}} shutdown

# Kill this workspace's QEMU at once (via its pid file; nothing else).
arm-dev-kill:
    @{{quote(armdev_dir / ".just-run")}} kill

# DESTRUCTIVE: return the disk to its freshly provisioned state (asks first).
arm-dev-reset:
    @{{quote(armdev_dir / ".just-run")}} reset

# Is the guest running, on which port, from which image, is the config applied?
arm-dev-status:
    @{{quote(armdev_dir / ".just-run")}} status

# Attach to the guest's serial console (Ctrl-] detaches).
arm-dev-console:
    @{{quote(armdev_dir / ".just-run")}} console

# Write an OpenSSH config for the guest (for ssh -F, scp, rsync, VS Code).
arm-dev-ssh-config:
    @{{quote(armdev_dir / ".just-run")}} sshconfig
