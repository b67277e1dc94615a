# The host tools armdev needs. `nix-shell` (or direnv's `use nix`) enters it.
{ pkgs ? import <nixpkgs> { } }:

let
  uboot = pkgs.pkgsCross.aarch64-multiplatform.ubootQemuAarch64;
in
pkgs.mkShell {
  packages = with pkgs; [
    go
    mage
    just
    qemu
    zstd
    e2fsprogs
    openssh
  ];
  # u-boot for QEMU's virt board, so `arm-dev-init` needs no `nix build`.
  ARMDEV_UBOOT = "${uboot}/u-boot.bin";
}
