# The guest's NixOS configuration, yours to edit. armdev mounts this folder
# at /etc/nixos in the guest over 9p, so `just arm-dev-update` applies edits
# made on the host.
#
# What belongs to one workspace (the guest user's name, uid and gid, the
# workspace's SSH key, the image's release) is not in this folder, which
# every workspace of a checkout shares: armdev writes it to
# /etc/armdev/identity.nix in the guest before every nixos-rebuild switch.
{ config, lib, pkgs, ... }:

let
  # A path literal is resolved against this file's folder, lexically:
  # /etc/nixos/../armdev/identity.nix is /etc/armdev/identity.nix.
  identityFile = ../armdev/identity.nix;
  id =
    if builtins.pathExists identityFile then import identityFile
    else throw ("armdev: /etc/armdev/identity.nix is missing; armdev writes it before it switches: "
      + "run `just arm-dev-update` on the host (`just arm-dev-init` for a new disk) instead of nixos-rebuild in the guest");
  home = "/home/${id.user}";
in
{
  imports = [ ./hardware.nix ./security.nix ];

  networking.hostName = "armdev";
  networking.firewall.allowedTCPPorts = [ 22 ];

  boot.loader.grub.enable = false;
  boot.loader.generic-extlinux-compatible.enable = true;
  boot.loader.generic-extlinux-compatible.configurationLimit = 2;
  boot.loader.timeout = 1;

  nix.settings = {
    experimental-features = [ "nix-command" "flakes" ];
    # Garbage collection keeps what the dev shells were built from, so
    # `arm-dev-tidy` does not make the next `cd /rsonpath` rebuild them
    # (nix-direnv pins each shell as a GC root; keep-outputs extends that
    # to the build-time inputs).
    keep-outputs = true;
    keep-derivations = true;
  };

  # The guest user mirrors the host user so that it owns the host user's
  # files on the 9p share (see internal/guestuser for how the identity is
  # chosen). A uid below 1000 makes it a system user, which gets no home
  # and no login shell unless asked: hence home, createHome and
  # useDefaultShell.
  users.users.${id.user} = {
    inherit (id) uid isNormalUser isSystemUser group;
    inherit home;
    createHome = true;
    useDefaultShell = true;
    extraGroups = [ "wheel" ];
    # No password: the console logs in automatically, SSH takes the
    # workspace key only.
    hashedPassword = "!";
    openssh.authorizedKeys.keys = id.authorizedKeys;
  };
  # null: NixOS allocates the gid (the host's would collide with its own).
  users.groups = lib.optionalAttrs id.declareGroup {
    ${id.group}.gid = id.gid;
  };
  # wheel may use sudo without a password: the account has none, and the
  # only way in over the network is the workspace key.
  security.sudo.wheelNeedsPassword = false;
  services.getty.autologinUser = id.user;

  # The project. msize=512000 is the largest Linux 6.x's virtio transport
  # takes. cache=mmap (Lima's choice) still reads and writes through to the
  # host, so the guest sees what host editors and git just wrote, and it
  # allows shared writable mmap, which cache=none refuses (sqlite, LMDB,
  # some build tools). The module must be loaded before the mount, as in
  # nixpkgs' qemu-vm.nix.
  fileSystems."/rsonpath" = {
    device = "rsonpath";
    fsType = "9p";
    options = [
      "trans=virtio"
      "version=9p2000.L"
      "msize=512000"
      "cache=mmap"
      "nofail"
      "x-systemd.requires=modprobe@9pnet_virtio.service"
    ];
  };
  # This folder. cache=none: nothing here is mmapped, and every
  # nixos-rebuild must read exactly what was just edited on the host.
  fileSystems."/etc/nixos" = {
    device = "nixconfig";
    fsType = "9p";
    options = [
      "trans=virtio"
      "version=9p2000.L"
      "msize=512000"
      "cache=none"
      "nofail"
      "x-systemd.requires=modprobe@9pnet_virtio.service"
    ];
  };

  # 9p is slow for many small writes: cargo builds on the guest's own disk.
  environment.variables.CARGO_TARGET_DIR = "${home}/target";

  programs.direnv.enable = true;
  programs.direnv.nix-direnv.enable = true;

  environment.systemPackages = with pkgs; [ git wget direnv sysbench ];

  # The release of the image the disk was made from (from the identity).
  system.stateVersion = id.release;
}
