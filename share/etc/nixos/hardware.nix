# What the emulated machine needs: QEMU's virt board booted by u-boot through
# extlinux, root on the SD image's ext4 partition, virtio devices and 9p.
{ lib, ... }:
{
  fileSystems."/" = {
    device = "/dev/disk/by-label/NIXOS_SD";
    fsType = "ext4";
  };

  boot.initrd.availableKernelModules = [
    "virtio_pci" "virtio_blk" "virtio_net" "virtio_rng"
    "9p" "9pnet_virtio"
  ];
  boot.kernelParams = [ "console=ttyAMA0,115200n8" ];

  # The power button QEMU's virt board offers a device-tree guest
  # (machine option acpi=off): lets `system_powerdown` shut down cleanly.
  boot.kernelModules = [ "gpio_keys" ];

  swapDevices = [ ];
}
