#!/bin/sh
# Boot the stand-in guest by hand, the way it was verified:
#   sh boot-manual.sh IMAGE.img.zst WORKDIR PORT [SHARE_DIR [NIXOS_CONFIG_DIR]]
# Decompresses the image into WORKDIR, puts a fresh root key into
# /root/.ssh/authorized_keys of that copy (with debugfs, as armdev does),
# makes a qcow2 overlay and runs QEMU in the foreground (serial log in
# WORKDIR/serial.log, QMP on WORKDIR/qmp.sock). SHARE_DIR is the 9p share
# "rsonpath", NIXOS_CONFIG_DIR (e.g. share/etc/nixos) the share "nixconfig"
# that provisioning mounts at /etc/nixos. Then, from another shell:
#   ssh -i WORKDIR/key -p PORT -o StrictHostKeyChecking=no root@127.0.0.1 uname -m
set -eu
[ $# -ge 3 ] || {
	echo "usage: $0 IMAGE.img.zst WORKDIR PORT [SHARE_DIR [NIXOS_CONFIG_DIR]]" >&2
	exit 2
}
zst=$1 d=$2 port=$3 share=${4:-$2/share} config=${5:-$2/nixos}
mkdir -p "$d" "$share" "$config"
d=$(cd "$d" && pwd)
zstd -q -d -f "$zst" -o "$d/base.img"
rm -f "$d/key" "$d/key.pub" "$d/disk.qcow2" "$d/serial.log"
ssh-keygen -q -t ed25519 -N '' -f "$d/key"
root="$d/base.img?offset=39845888"
debugfs -w -R "write $d/key.pub /root/.ssh/authorized_keys" "$root" 2>/dev/null
debugfs -w -R "sif /root/.ssh/authorized_keys mode 0100600" "$root" 2>/dev/null
debugfs -w -R "sif /root/.ssh/authorized_keys uid 0" "$root" 2>/dev/null
debugfs -w -R "sif /root/.ssh/authorized_keys gid 0" "$root" 2>/dev/null
qemu-img create -q -f qcow2 -F raw -b "$d/base.img" "$d/disk.qcow2" 4G
exec qemu-system-aarch64 -name armdev-guest,process=armdev-guest \
	-machine virt,gic-version=max,acpi=off -accel tcg,thread=multi \
	-cpu max,pauth-impdef=on -smp 2 -m 1024 \
	-bios /usr/lib/u-boot/qemu_arm64/u-boot.bin -display none -nodefaults \
	-chardev "socket,id=ser0,path=$d/serial.sock,server=on,wait=off,logfile=$d/serial.log" \
	-serial chardev:ser0 \
	-qmp "unix:$d/qmp.sock,server=on,wait=off" \
	-device virtio-rng-pci \
	-drive "if=none,file=$d/disk.qcow2,format=qcow2,id=hd0" -device virtio-blk-pci,drive=hd0 \
	-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:22" -device virtio-net-pci,netdev=n0,romfile= \
	-fsdev "local,id=fs0,path=$share,security_model=none" -device virtio-9p-pci,fsdev=fs0,mount_tag=rsonpath \
	-fsdev "local,id=fs1,path=$config,security_model=none" -device virtio-9p-pci,fsdev=fs1,mount_tag=nixconfig
