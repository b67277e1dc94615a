# Who may log in, and how. CI reads these settings with
# `nix-instantiate --eval` so that they cannot regress silently.
{ ... }:
{
  services.openssh = {
    enable = true;
    settings = {
      # Keys only: the workspace key armdev generates (see armdev-local.nix).
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
      # root logs in only during provisioning, on the stock image's settings.
      PermitRootLogin = "no";
    };
  };
  # No password for anyone: console autologin only, never over the network.
  users.users.root.hashedPassword = "!";
  users.users.armdev.hashedPassword = "!";
}
