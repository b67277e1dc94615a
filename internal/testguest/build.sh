#!/bin/sh
# Assemble the armdev stand-in guest: a raw disk image laid out like the NixOS
# SD image (MBR; FAT "FIRMWARE" at 8 MiB, 30 MiB; ext4 "NIXOS_SD" at 38 MiB,
# bootable, to the end) booting through u-boot's extlinux support.
#
# usage: build.sh GUESTDIR WORKDIR OUT.img DEB...
#   GUESTDIR  this package's guest/ files (initramfs/, rootfs/, standin/),
#             with the compiled arm64 programs standin/sudo (sudo/main.go)
#             and standin/armdev-mmap-write (mmapwrite/main.go)
#   WORKDIR   empty scratch directory
#   OUT.img   raw image to write
#   DEB...    the arm64 .deb files (kernel, busybox-static, dropbear, libs)
# Needs: dpkg, cpio, gzip, mke2fs, debugfs, mkfs.vfat, sfdisk, dd, truncate,
# awk.
# No root, loop devices or mounts.
set -eu

[ $# -ge 4 ] || {
	echo "usage: $0 GUESTDIR WORKDIR OUT.img DEB..." >&2
	exit 2
}
guest=$1
work=$2
out=$3
shift 3
for p in sudo armdev-mmap-write; do
	[ -f "$guest/standin/$p" ] || {
		echo "$guest/standin/$p missing: build the Go programs first (see testguest.Build)" >&2
		exit 2
	}
done

MiB=1048576
fw_start_mib=8
fw_size_mib=30
root_start_mib=38 # byte 39845888, sector 77824
root_size_mib=${TESTGUEST_ROOT_MIB:-256}
disk_id=0x2178694e # nixpkgs sdImage.firmwarePartitionID
store=/nix/store/00000000000000000000000000000000-nixos-system-armdev-standin

x=$work/debs
root=$work/root
ird=$work/initramfs
mkdir -p "$x" "$root" "$ird"

echo "unpacking $# packages"
for deb in "$@"; do
	dpkg -x "$deb" "$x"
done

set -- "$x"/lib/modules/*
[ $# -eq 1 ] && [ -d "$1" ] || {
	echo "expected exactly one kernel in $x/lib/modules, found: $*" >&2
	exit 1
}
moddir=$1
kver=${moddir##*/}
echo "kernel $kver"

# --- busybox applet names, read from the binary's packed name table ---
applets=$(tr '\0' '\n' <"$x/bin/busybox" | awk '
	p == 2 { if ($0 == "") exit; print; next }
	p == 1 { if ($0 == "[[") { print "["; print "[["; p = 2 } else p = 0; next }
	$0 == "[" { p = 1 }')
for a in sh init mount insmod switch_root acpid poweroff ip; do
	printf '%s\n' "$applets" | grep -qx "$a" || {
		echo "busybox lacks applet $a (applet table not found?)" >&2
		exit 1
	}
done

# --- initramfs: busybox, /init and the modules, flat in /lib/modules ---
mods="crc16 mbcache jbd2 crc32c_generic ext4
	virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk
	failover net_failover virtio_net
	netfs fscache 9pnet 9pnet_virtio 9p
	evdev gpio_keys"
mkdir -p "$ird/bin" "$ird/lib/modules" "$ird/dev" "$ird/proc" "$ird/sys" "$ird/newroot"
cp "$x/bin/busybox" "$ird/bin/busybox"
for a in sh mount insmod switch_root sleep mkdir echo; do
	ln -s busybox "$ird/bin/$a"
done
for m in $mods; do
	f=$(find "$moddir/kernel" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" | head -n 1)
	[ -n "$f" ] || {
		echo "module $m not found in $moddir" >&2
		exit 1
	}
	case $f in
	*.ko) cp "$f" "$ird/lib/modules/$m.ko" ;;
	*.ko.xz) xz -dc "$f" >"$ird/lib/modules/$m.ko" ;;
	*.ko.zst) zstd -qdc "$f" >"$ird/lib/modules/$m.ko" ;;
	esac
done
cp "$guest/initramfs/init" "$ird/init"
chmod 0755 "$ird/init"

# --- root file system ---
for d in bin sbin usr/bin usr/sbin lib usr/lib boot/extlinux boot/nixos dev proc sys run tmp \
	mnt var/log var/lib var/empty root/.ssh home etc/nixos etc/dropbear rsonpath \
	nix/var/nix/profiles "$store/sw/bin"; do
	mkdir -p "$root/$d"
done
chmod 0700 "$root/root" "$root/root/.ssh"
chmod 1777 "$root/tmp"
chmod 0555 "$root/var/empty"
: >"$root/nix-path-registration"

cp "$x/bin/busybox" "$root/bin/busybox"
printf '%s\n' "$applets" | while read -r a; do
	[ "$a" = busybox ] || ln -s busybox "$root/bin/$a"
done
for a in init poweroff reboot halt; do
	ln -s ../bin/busybox "$root/sbin/$a"
done
ln -s ../../bin/busybox "$root/usr/bin/env"
# bash: NixOS's login shell; busybox stays for everything else.
rm -f "$root/bin/bash"
cp "$x/bin/bash" "$root/bin/bash"

cp -a "$x/usr/sbin/dropbear" "$root/usr/sbin/"
cp -a "$x/usr/bin/dbclient" "$x/usr/bin/dropbearkey" "$root/usr/bin/"
cp -a "$x/lib/." "$root/lib/"
rm -rf "$root/lib/modules"
mkdir -p "$root/usr/lib/aarch64-linux-gnu"
for f in "$x"/usr/lib/aarch64-linux-gnu/*; do
	[ "${f##*/}" = gconv ] || cp -a "$f" "$root/usr/lib/aarch64-linux-gnu/"
done

cp -R "$guest/rootfs/." "$root/"
chmod 0755 "$root/etc/init.d/"* "$root/etc/acpi/PWRF/00000080"
: >"$root/var/log/armdev-standin.log"
chmod 0666 "$root/var/log/armdev-standin.log"

cp "$guest/standin/armdev-standin" "$root/$store/sw/bin/armdev-standin"
chmod 0755 "$root/$store/sw/bin/armdev-standin"
ln -s "$store" "$root/nix/var/nix/profiles/system"
# Login shells, as NixOS names them in /etc/passwd.
ln -s /bin/bash "$root/$store/sw/bin/bash"
ln -s /bin/busybox "$root/$store/sw/bin/nologin"
cp "$guest/standin/armdev-mmap-write" "$root/usr/bin/armdev-mmap-write"
chmod 0755 "$root/usr/bin/armdev-mmap-write"
for c in nixos-rebuild nix-env; do
	ln -s armdev-standin "$root/$store/sw/bin/$c"
done
# The guest's Nix (standin/nix-standin): its commands, its nixpkgs (one
# template per package) and evaluation time, and a store, roots and a
# record of what evaluations made, which every user may write, as the
# nix-daemon would for them.
cp "$guest/standin/nix-standin" "$root/$store/sw/bin/nix-standin"
chmod 0755 "$root/$store/sw/bin/nix-standin"
for c in nix nix-shell nix-store nix-collect-garbage; do
	ln -s nix-standin "$root/$store/sw/bin/$c"
done
mkdir -p "$root/usr/share/armdev-standin/nixpkgs" "$root/nix/var/nix/gcroots/auto" "$root/nix/var/nix/armdev-standin"
cp "$guest/nixpkgs-fixture/pkgs/"* "$root/usr/share/armdev-standin/nixpkgs/"
cp "$guest/nixpkgs-fixture/eval-seconds" "$root/usr/share/armdev-standin/eval-seconds"
chmod 0644 "$root/usr/share/armdev-standin/nixpkgs/"* "$root/usr/share/armdev-standin/eval-seconds"
chmod 1777 "$root/nix/store" "$root/nix/var/nix/gcroots/auto" "$root/nix/var/nix/armdev-standin"
# sudo: setuid root (mke2fs -d keeps the mode; the debugfs pass below makes
# sure of mode and owner whoever builds).
sudo_bin=$store/sw/bin/sudo
cp "$guest/standin/sudo" "$root/$sudo_bin"
chmod 04755 "$root/$sudo_bin"
for c in nixos-rebuild nix-env sudo nix nix-shell nix-store nix-collect-garbage; do
	ln -s "/run/current-system/sw/bin/$c" "$root/bin/$c"
done

# --- the stock image's accounts: what NixOS's installer configuration
# leaves on the SD image (root and nixos with empty passwords, …), made by
# the stand-in's own activation; the owners it would set are in stock.chown.
ARMDEV_STANDIN_ROOT=$root ARMDEV_STANDIN_STUB_LOG=$work/stock.chown \
	sh "$guest/standin/armdev-standin" stock

# --- boot files read by u-boot's extlinux support ---
kernel=$x/boot/vmlinuz-$kver
if [ "$(od -An -tx1 -j56 -N4 "$kernel" | tr -d ' ')" = 41524d64 ]; then
	cp "$kernel" "$root/boot/nixos/Image" # already a raw arm64 Image ("ARM\x64")
else
	gzip -dc "$kernel" >"$root/boot/nixos/Image"
fi
(cd "$ird" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -9n >"$root/boot/nixos/initrd"
cat >"$root/boot/extlinux/extlinux.conf" <<EOF
# Generated file, all changes will be lost on nixos-rebuild!
# (armdev stand-in guest: Debian $kver, busybox, dropbear)

# Change this to e.g. nixos-42 to default to a different generation
DEFAULT nixos-default

MENU TITLE ------------------------------------------------------------
TIMEOUT 1

LABEL nixos-default
  MENU LABEL NixOS - Default
  LINUX ../nixos/Image
  INITRD ../nixos/initrd
  APPEND console=ttyAMA0,115200n8 loglevel=4
EOF

# --- file systems and partition table ---
echo "making ext4 NIXOS_SD (${root_size_mib} MiB)"
rm -f "$work/root.img" "$work/fw.img" "$out"
mke2fs -q -F -t ext4 -b 4096 -L NIXOS_SD -U 44444444-4444-4444-8888-888888888888 \
	-d "$root" "$work/root.img" "${root_size_mib}M"
if [ "$(id -u)" != 0 ]; then
	# mke2fs -d copies the builder's uid/gid: make everything root's.
	(cd "$root" && find . -mindepth 1) | sed 's|^\.||' | while read -r p; do
		echo "sif \"$p\" uid 0"
		echo "sif \"$p\" gid 0"
	done >"$work/chown.debugfs"
	echo 'sif / uid 0' >>"$work/chown.debugfs"
	echo 'sif / gid 0' >>"$work/chown.debugfs"
	debugfs -w -f "$work/chown.debugfs" "$work/root.img" >/dev/null 2>&1
fi
printf 'sif "%s" uid 0\nsif "%s" gid 0\nsif "%s" mode 0104755\n' "$sudo_bin" "$sudo_bin" "$sudo_bin" |
	debugfs -w -f - "$work/root.img" >/dev/null 2>&1
awk '$1 == "chown" { split($2, o, ":"); printf "sif \"%s\" uid %s\nsif \"%s\" gid %s\n", $3, o[1], $3, o[2] }' \
	"$work/stock.chown" | debugfs -w -f - "$work/root.img" >/dev/null 2>&1

echo "making FAT FIRMWARE"
truncate -s "$((fw_size_mib * MiB))" "$work/fw.img"
mkfs.vfat --invariant -i "${disk_id#0x}" -n FIRMWARE "$work/fw.img" >/dev/null

echo "writing partition table"
truncate -s "$(((root_start_mib + root_size_mib) * MiB))" "$out"
sfdisk --quiet --no-reread --no-tell-kernel "$out" <<EOF
label: dos
label-id: $disk_id

start=${fw_start_mib}M, size=$((fw_size_mib * MiB / 512)), type=b
start=${root_start_mib}M, type=83, bootable
EOF
dd if="$work/fw.img" of="$out" bs=1M seek="$fw_start_mib" conv=notrunc,sparse status=none
dd if="$work/root.img" of="$out" bs=1M seek="$root_start_mib" conv=notrunc,sparse status=none
rm -f "$work/root.img" "$work/fw.img"
echo "image written: $out"
