#!/bin/sh
# First-boot provisioning, run by armdev as root over SSH on the stock NixOS
# SD image, after armdev uploaded the workspace's /etc/armdev/identity.nix:
# drop the installer's configuration, mount ours from the host and switch to
# it. armdev powers the machine off afterwards and records the result.
# POSIX sh: busybox ash runs it in the test's stand-in guest.
set -eu

identity=/etc/armdev/identity.nix
# fileSystems."/etc/nixos" of configuration.nix, without its fstab-only
# options (nofail, x-systemd.*).
options=trans=virtio,version=9p2000.L,msize=512000,cache=none

say() {
	echo "armdev: $*"
}

die() {
	echo "armdev: $*" >&2
	exit 1
}

# mounted_fstype prints the file system type mounted at $1, if any.
mounted_fstype() {
	awk -v dir="$1" '$2 == dir { type = $3 } END { if (type != "") print type }' /proc/mounts
}

[ -f "$identity" ] ||
	die "$identity is missing: armdev uploads it before this script runs; run \`just arm-dev-init\` again"

fstype=$(mounted_fstype /etc/nixos)
case $fstype in
9p)
	say "/etc/nixos is mounted already"
	;;
"")
	# On its first boot the stock image copies its installer configuration
	# to /etc/nixos/configuration.nix (clone-config.nix). Our mount hides
	# it, but should the share ever be missing (the mount is nofail), a
	# rebuild would switch back to the installer: root login over SSH and
	# a password-less user. Only the image's own disk is touched here:
	# /etc/nixos is no mount point.
	if [ -e /etc/nixos/configuration.nix ]; then
		say "removing the installer's /etc/nixos/configuration.nix from the disk"
		rm -f /etc/nixos/configuration.nix
	fi
	say "mounting the configuration share at /etc/nixos"
	mkdir -p /etc/nixos
	mount -t 9p -o "$options" nixconfig /etc/nixos
	;;
*)
	die "/etc/nixos is already mounted ($fstype), not from armdev's 9p share: unmount it and run \`just arm-dev-init\` again"
	;;
esac
[ -f /etc/nixos/configuration.nix ] ||
	die "configuration.nix is missing on the configuration share (ARMDEV_NIXOS_CONFIG, share/etc/nixos by default)"

say "nixos-rebuild switch (this takes a while under emulation)"
nixos-rebuild switch

# NixOS keeps the uid of an account that exists already and hands out the
# ids of new system accounts from 999 down, so an account of the image may
# have had the host's uid or gid first: say so, the guest user shares it.
uid=$(sed -n 's/^  uid = \([0-9][0-9]*\);$/\1/p' "$identity")
user=$(sed -n 's/^  user = "\(.*\)";$/\1/p' "$identity")
gid=$(sed -n 's/^  gid = \([0-9][0-9]*\);$/\1/p' "$identity")
group=$(sed -n 's/^  group = "\(.*\)";$/\1/p' "$identity")
others='$3 == id && $1 != me { printf "%s%s", sep, $1; sep = ", " }'
if [ -n "$uid" ]; then
	shared=$(awk -F: -v id="$uid" -v me="$user" "$others" /etc/passwd)
	[ -z "$shared" ] || say "warning: $user shares uid $uid with $shared"
fi
if [ -n "$gid" ]; then
	shared=$(awk -F: -v id="$gid" -v me="$group" "$others" /etc/group)
	[ -z "$shared" ] || say "warning: group $group shares gid $gid with $shared"
fi

say "provisioning done"
