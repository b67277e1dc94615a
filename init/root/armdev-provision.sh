#!/bin/sh
# First-boot provisioning, run by armdev as root over SSH on the stock NixOS
# SD image: mount our configuration from the host and switch to it.
# armdev powers the machine off afterwards and records the result.
set -eu

echo "armdev: mounting the configuration share at /etc/nixos"
mkdir -p /etc/nixos
if ! grep -q ' /etc/nixos 9p ' /proc/mounts; then
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none nixconfig /etc/nixos
fi
test -f /etc/nixos/configuration.nix || {
  echo "armdev: /etc/nixos/configuration.nix is missing on the share" >&2
  exit 1
}

echo "armdev: nixos-rebuild switch (this takes a while under emulation)"
nixos-rebuild switch

echo "armdev: provisioning done"
