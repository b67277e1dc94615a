# The fixture project of armdev's stand-in guest: a dev shell in the subset
# of Nix that the stand-in's nix and nix-shell evaluate (see the top of
# standin/nix-standin for all of it):
#   - packages, buildInputs and nativeBuildInputs: lists of pkgs.NAME (or
#     `with pkgs; [ NAME … ]`), where NAME is a file in nixpkgs-fixture/pkgs;
#     the tool they provide is on PATH only inside the shell;
#   - attributes with "strings" (\" \\ \n \t \r \$ escapes), ''indented
#     strings'' ('' ' and ''$ escapes), true, false, null or whole numbers,
#     exported to the shell as nix does;
#   - shellHook, run when the environment is built.
# No string interpolation, let, inherit or inputsFrom. The marker
# armdev-standin-FAIL (in lower case) anywhere makes the evaluation fail
# with a syntax error; a package that is not in nixpkgs-fixture/pkgs fails
# with nix's "attribute 'NAME' missing".
{ pkgs ? import <nixpkgs> { } }:

pkgs.mkShell {
  packages = [ pkgs.armdev-fixture-tool ];

  FIXTURE_GREETING = "hello  \"world\"";

  shellHook = ''
    export FROM_HOOK="set by shellHook"
  '';
}
