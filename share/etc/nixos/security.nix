# Who may log in, and how. internal/nixoseval's tests evaluate these
# settings with nix-instantiate so that they cannot regress silently.
{ ... }:
{
  services.openssh = {
    enable = true;
    settings = {
      # Keys only: the workspace key armdev generates (identity.nix).
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
      # root logs in only during provisioning, on the stock image's settings.
      PermitRootLogin = "no";
    };
  };
  # Accounts are exactly what the configuration declares. With mutable
  # users, activation keeps the password of an account that exists already
  # (update-users-groups.pl), so the stock image's empty root password would
  # survive hashedPassword below; immutable users also remove the
  # installer's password-less `nixos` account. NixOS then asks for a wheel
  # user with a key, which the identity provides.
  users.mutableUsers = false;
  # No password for root: console autologin is for the guest user only.
  users.users.root.hashedPassword = "!";
}
