# The fixture project of armdev's stand-in guest, as a flake: the stand-in's
# nix evaluates the first pkgs.mkShell { … } after devShells, in the subset
# described in ../project/shell.nix.
{
  description = "armdev stand-in fixture";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      pkgs = nixpkgs.legacyPackages.aarch64-linux;
    in
    {
      devShells.aarch64-linux.default = pkgs.mkShell {
        packages = [ pkgs.armdev-fixture-tool ];
        FIXTURE_GREETING = "hello from the flake";
        shellHook = ''
          export FROM_HOOK="set by the flake's shellHook"
        '';
      };
    };
}
