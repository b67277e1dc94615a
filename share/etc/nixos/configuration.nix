# The guest's NixOS configuration. armdev mounts this folder at /etc/nixos in
# the guest over 9p, so `just arm-dev-update` applies edits made on the host.
#
# Machine-specific values (the workspace's SSH key, the host user's uid/gid)
# live in ./armdev-local.nix, which armdev writes and git ignores.
{ config, lib, pkgs, ... }:

let
  local =
    if builtins.pathExists ./armdev-local.nix
    then import ./armdev-local.nix
    else { };
  hostUid = local.uid or 1000;
  hostGid = local.gid or 1000;
  authorizedKeys = local.authorizedKeys or [ ];
  release = local.release or "26.05";

  # 9p options: 512000 is the largest msize Linux 6.x's virtio transport takes.
  # cache=none keeps the guest coherent with edits made on the host at any
  # moment (host editors and git write the files the guest builds); cargo's
  # heavy output goes to CARGO_TARGET_DIR on the guest's own disk instead.
  ninepOptions = [
    "trans=virtio"
    "version=9p2000.L"
    "msize=512000"
    "cache=none"
    "nofail"
  ];
in
{
  imports = [ ./hardware.nix ./security.nix ];

  networking.hostName = "armdev";
  networking.firewall.allowedTCPPorts = [ 22 ];

  boot.loader.grub.enable = false;
  boot.loader.generic-extlinux-compatible.enable = true;
  boot.loader.generic-extlinux-compatible.configurationLimit = 2;
  boot.loader.timeout = 1;

  nix.settings.experimental-features = [ "nix-command" "flakes" ];

  users.groups.armdev.gid = hostGid;
  users.users.armdev = {
    isNormalUser = true;
    uid = hostUid;
    group = "armdev";
    extraGroups = [ "wheel" ];
    openssh.authorizedKeys.keys = authorizedKeys;
  };
  # wheel may use sudo without a password: the account has none, and the
  # only way in over the network is the workspace key.
  security.sudo.wheelNeedsPassword = false;
  services.getty.autologinUser = "armdev";

  fileSystems."/rsonpath" = {
    device = "rsonpath";
    fsType = "9p";
    options = ninepOptions;
  };
  fileSystems."/etc/nixos" = {
    device = "nixconfig";
    fsType = "9p";
    options = ninepOptions;
  };

  environment.variables.CARGO_TARGET_DIR = "/home/armdev/target";

  programs.direnv.enable = true;
  programs.direnv.nix-direnv.enable = true;

  environment.systemPackages = with pkgs; [ git wget direnv sysbench ];

  system.stateVersion = release;
}
