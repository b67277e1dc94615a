package nixoseval_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/rsonpath/armdev/internal/guestuser"
	"github.com/rsonpath/armdev/internal/nixoseval"
)

const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG9vZm9vZm9vZm9vZm9vZm9vZm9vZm9vZm9vZm9vZm9v armdev"

// writeConfig makes a configuration folder from name → content.
func writeConfig(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// copyConfig copies the repository's share/etc/nixos and applies edits
// (file → old → new) to the copy.
func copyConfig(t *testing.T, edits map[string][2]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "nixos")
	if err := os.CopyFS(dir, os.DirFS(nixoseval.ConfigDir(t))); err != nil {
		t.Fatal(err)
	}
	for file, e := range edits {
		path := filepath.Join(dir, file)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), e[0]) {
			t.Fatalf("%s does not contain %q", file, e[0])
		}
		if err := os.WriteFile(path, []byte(strings.Replace(string(b), e[0], e[1], 1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestModuleSystem checks the merge rules eval.nix shares with NixOS on a
// synthetic configuration.
func TestModuleSystem(t *testing.T) {
	nixoseval.Require(t)
	dir := writeConfig(t, map[string]string{
		"configuration.nix": `{ config, lib, ... }: {
  imports = [ ./a.nix ./b.nix ./a.nix ];
  users.users.alice = { isNormalUser = true; uid = 1500; group = "users"; extraGroups = [ "wheel" ]; };
  services.getty.autologinUser = lib.mkDefault "nobody";
  system.stateVersion = lib.mkForce "forced";
  environment.variables.FROM_CONFIG = config.system.stateVersion + "!";
}`,
		"a.nix": `{ lib, ... }: {
  users.users.alice.extraGroups = [ "video" ];
  services.getty.autologinUser = "alice";
  system.stateVersion = "plain";
  fileSystems."/data" = { device = "data"; fsType = "9p"; options = [ "a" ]; };
}`,
		"b.nix": `{ config, lib, ... }: {
  config = lib.mkMerge [
    (lib.mkIf (config.services.getty.autologinUser == "alice") { environment.variables.FROM_B = "b"; })
    (lib.mkIf false { users.users.mallory = { isNormalUser = true; }; })
    { fileSystems."/data".options = lib.mkAfter [ "b" ]; }
  ];
}`,
	})
	r, err := nixoseval.Eval(t.Context(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	alice := r.Users["alice"]
	if want := []string{"wheel", "video"}; !sameSet(alice.ExtraGroups, want) {
		t.Errorf("lists are not concatenated (a.nix imported twice counts once): %q, want %q", alice.ExtraGroups, want)
	}
	if alice.Home != "/home/alice" || !alice.CreateHome || !alice.UseDefaultShell {
		t.Errorf("isNormalUser defaults missing: %+v", alice)
	}
	if deref(r.AutologinUser) != "alice" {
		t.Errorf("a plain definition must beat mkDefault: %v", deref(r.AutologinUser))
	}
	if deref(r.StateVersion) != "forced" {
		t.Errorf("mkForce must beat a plain definition: %v", deref(r.StateVersion))
	}
	if r.Variables["FROM_CONFIG"] != "forced!" || r.Variables["FROM_B"] != "b" {
		t.Errorf("config is not the merged result: %q", r.Variables)
	}
	if _, ok := r.Users["mallory"]; ok {
		t.Error("mkIf false still declared a user")
	}
	if got := r.FileSystems["/data"].Options; !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("fileSystems./data.options = %q", got)
	}
	for _, name := range []string{"root", "nobody", "nixbld1", "nixbld32"} {
		if _, ok := r.Users[name]; !ok {
			t.Errorf("NixOS's %s is not declared", name)
		}
	}
	if _, ok := r.Users["nixbld33"]; ok {
		t.Error("more than 32 build users")
	}
	if _, ok := r.Users["sshd"]; ok {
		t.Error("sshd is declared without OpenSSH")
	}
	if len(r.FailedAssertions) > 0 {
		t.Errorf("failed assertions: %q", r.FailedAssertions)
	}
}

// TestAutoAllocateUIDs: with auto-allocate-uids Nix needs no build users,
// so NixOS declares none and uid 30001 is free.
func TestAutoAllocateUIDs(t *testing.T) {
	nixoseval.Require(t)
	dir := writeConfig(t, map[string]string{
		"configuration.nix": `{ ... }: {
  nix.settings.auto-allocate-uids = true;
  users.users.bob = { isNormalUser = true; uid = 30001; };
}`,
	})
	r, err := nixoseval.Eval(t.Context(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Users["nixbld1"]; ok {
		t.Error("build users declared with auto-allocate-uids")
	}
	if len(r.FailedAssertions) > 0 {
		t.Errorf("failed assertions: %q", r.FailedAssertions)
	}
}

// TestConflictingDefinitions: two different values at the same priority
// are an error, as in NixOS.
func TestConflictingDefinitions(t *testing.T) {
	nixoseval.Require(t)
	dir := writeConfig(t, map[string]string{
		"configuration.nix": `{ ... }: { imports = [ ./a.nix ]; services.openssh.settings.PermitRootLogin = "no"; }`,
		"a.nix":             `{ ... }: { services.openssh.settings.PermitRootLogin = "yes"; }`,
	})
	_, err := nixoseval.Eval(t.Context(), dir, nil)
	if err == nil || !strings.Contains(err.Error(), "services.openssh.settings.PermitRootLogin' has conflicting definition values") {
		t.Fatalf("err = %v, want a conflict on PermitRootLogin", err)
	}
}

// identity is a hand-written identity file, to build ones For never makes.
func identity(uid int, normal bool, group, gid string, declare bool, keys ...string) []byte {
	id := guestuser.Identity{User: "armdev", UID: uid, IsNormalUser: normal, IsSystemUser: !normal, Group: group, DeclareGroup: declare}
	b := guestuser.Render(id, "26.05", keys)
	return []byte(strings.Replace(string(b), "gid = null;", "gid = "+gid+";", 1))
}

// TestAssertionsFail proves the check can fail: identities NixOS refuses
// report NixOS's own messages.
func TestAssertionsFail(t *testing.T) {
	nixoseval.Require(t)
	dir := nixoseval.ConfigDir(t)
	cases := []struct {
		name     string
		identity []byte
		want     []string
		trace    string
	}{
		{"normal user below 1000", identity(501, true, "armdev", "null", true, testKey),
			[]string{"A user cannot have a users.users.armdev.uid set below 1000 and set users.users.armdev.isNormalUser.\n" +
				"Either users.users.armdev.isSystemUser must be set to true instead of users.users.armdev.isNormalUser\n" +
				"or users.users.armdev.uid must be changed to 1000 or above.\n"}, ""},
		{"gid 20 declared (macOS staff is NixOS's lp)", identity(501, false, "armdev", "20", true, testKey),
			[]string{"UIDs and GIDs must be unique!"}, "Duplicate gid 20"},
		{"gid 100 declared again", identity(1000, true, "armdev", "100", true, testKey),
			[]string{"UIDs and GIDs must be unique!"}, "Duplicate gid 100"},
		{"uid of a build user", identity(30001, true, "armdev", "null", true, testKey),
			[]string{"UIDs and GIDs must be unique!"}, "Duplicate uid 30001"},
		{"group neither declared nor NixOS's", identity(1000, true, "armdev", "null", false, testKey),
			[]string{"The following users have a primary group that is undefined: armdev\nHint: Add this to your NixOS configuration:\n  users.groups.armdev = {};\n"}, ""},
		{"no key with immutable users", identity(1000, true, "armdev", "1000", true),
			[]string{"Neither the root account nor any wheel user has a password or SSH authorized key.\n"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := nixoseval.Eval(t.Context(), dir, c.identity)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range c.want {
				if !slices.ContainsFunc(r.FailedAssertions, func(m string) bool { return strings.HasPrefix(m, want) }) {
					t.Errorf("failed assertions %q lack %q", r.FailedAssertions, want)
				}
			}
			if c.trace != "" && !slices.Contains(r.Traces, c.trace) {
				t.Errorf("traces %q lack %q", r.Traces, c.trace)
			}
		})
	}
}

// TestMissingIdentity: without /etc/armdev/identity.nix evaluation stops
// with a line that says what to run.
func TestMissingIdentity(t *testing.T) {
	nixoseval.Require(t)
	_, err := nixoseval.Eval(t.Context(), nixoseval.ConfigDir(t), nil)
	if err == nil {
		t.Fatal("evaluated without an identity")
	}
	for _, want := range []string{"/etc/armdev/identity.nix is missing", "just arm-dev-update", "just arm-dev-init"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// securityProblems lists how r falls short of the guest's login policy:
// keys only, no root login, no passwords, users exactly as declared, and
// the only authorized key the identity's.
func securityProblems(r nixoseval.Result, user string, keys []string) []string {
	var p []string
	s := r.OpenSSH.Settings
	if !r.OpenSSH.Enable {
		p = append(p, "sshd is off")
	}
	if s["PermitRootLogin"] != "no" {
		p = append(p, `PermitRootLogin is not "no"`)
	}
	if s["PasswordAuthentication"] != false {
		p = append(p, "PasswordAuthentication is not false")
	}
	if s["KbdInteractiveAuthentication"] != false {
		p = append(p, "KbdInteractiveAuthentication is not false")
	}
	if r.MutableUsers {
		p = append(p, "users.mutableUsers is true: the image's empty root password survives")
	}
	if h := r.RootHashedPassword(); h == nil || *h != "!" {
		p = append(p, `root's hashedPassword is not "!"`)
	}
	if h := r.Users[user].HashedPassword; h == nil || *h != "!" {
		p = append(p, user+`'s hashedPassword is not "!"`)
	}
	for name, u := range r.Users {
		want := []string{}
		if name == user {
			want = keys
		}
		if !reflect.DeepEqual(append([]string{}, u.AuthorizedKeys...), append([]string{}, want...)) {
			p = append(p, name+" has authorized keys besides the identity's")
		}
	}
	return p
}

// TestSecurity checks the committed configuration's login policy, and that
// the check catches each weakening.
func TestSecurity(t *testing.T) {
	nixoseval.Require(t)
	id := guestuser.For(1000, 1000, "armdev")
	ident := guestuser.Render(id, "26.05", []string{testKey})
	r, err := nixoseval.Eval(t.Context(), nixoseval.ConfigDir(t), ident)
	if err != nil {
		t.Fatal(err)
	}
	if p := securityProblems(r, id.User, []string{testKey}); len(p) > 0 {
		t.Errorf("share/etc/nixos weakened the guest's security: %q", p)
	}
	if _, ok := r.Users["sshd"]; !ok {
		t.Error("OpenSSH is on but its sshd account is not declared")
	}
	if r.WheelNeedsPassword {
		t.Error("wheel needs a password that no account has")
	}

	weakened := map[string]struct {
		edits map[string][2]string
		want  string
	}{
		"root login":    {map[string][2]string{"security.nix": {`PermitRootLogin = "no";`, `PermitRootLogin = "yes";`}}, "PermitRootLogin"},
		"passwords":     {map[string][2]string{"security.nix": {`PasswordAuthentication = false;`, `PasswordAuthentication = true;`}}, "PasswordAuthentication"},
		"mutable":       {map[string][2]string{"security.nix": {`users.mutableUsers = false;`, `users.mutableUsers = true;`}}, "mutableUsers"},
		"root password": {map[string][2]string{"security.nix": {`users.users.root.hashedPassword = "!";`, ``}}, "root's hashedPassword"},
		"committed key": {map[string][2]string{"configuration.nix": {`openssh.authorizedKeys.keys = id.authorizedKeys;`,
			`openssh.authorizedKeys.keys = id.authorizedKeys ++ [ "ssh-rsa AAAAB3 someone" ];`}}, "authorized keys"},
	}
	for name, w := range weakened {
		t.Run(name, func(t *testing.T) {
			r, err := nixoseval.Eval(t.Context(), copyConfig(t, w.edits), ident)
			if err != nil {
				t.Fatal(err)
			}
			p := securityProblems(r, id.User, []string{testKey})
			if !slices.ContainsFunc(p, func(s string) bool { return strings.Contains(s, w.want) }) {
				t.Errorf("weakened %s, but the check found %q", name, p)
			}
		})
	}
}

// TestShares checks the 9p mounts: cache=mmap on the project (shared
// writable mmap), msize and the module dependency on both.
func TestShares(t *testing.T) {
	nixoseval.Require(t)
	r, err := nixoseval.Eval(t.Context(), nixoseval.ConfigDir(t), guestuser.Render(guestuser.For(1000, 1000, "armdev"), "26.05", []string{testKey}))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"/rsonpath": "rsonpath", "/etc/nixos": "nixconfig"}
	if len(r.FileSystems) != len(want) {
		t.Errorf("9p file systems %v, want %v", r.FileSystems, want)
	}
	for path, tag := range want {
		fs := r.FileSystems[path]
		if fs.Device != tag {
			t.Errorf("%s: device %q, want %q", path, fs.Device, tag)
		}
		for _, o := range []string{"trans=virtio", "version=9p2000.L", "msize=512000", "nofail", "x-systemd.requires=modprobe@9pnet_virtio.service"} {
			if !slices.Contains(fs.Options, o) {
				t.Errorf("%s: options %q lack %s", path, fs.Options, o)
			}
		}
	}
	if !slices.Contains(r.FileSystems["/rsonpath"].Options, "cache=mmap") {
		t.Errorf("/rsonpath: options %q lack cache=mmap", r.FileSystems["/rsonpath"].Options)
	}
	if !slices.Contains(r.FileSystems["/etc/nixos"].Options, "cache=none") {
		t.Errorf("/etc/nixos: options %q lack cache=none", r.FileSystems["/etc/nixos"].Options)
	}
}

// TestNixSettings: flakes stay on, and garbage collection keeps what dev
// shells were built from.
func TestNixSettings(t *testing.T) {
	nixoseval.Require(t)
	r, err := nixoseval.Eval(t.Context(), nixoseval.ConfigDir(t), guestuser.Render(guestuser.For(1000, 1000, "armdev"), "26.05", []string{testKey}))
	if err != nil {
		t.Fatal(err)
	}
	s := r.NixSettings
	if s["keep-outputs"] != true || s["keep-derivations"] != true {
		t.Errorf("keep-outputs %v, keep-derivations %v: want both true", s["keep-outputs"], s["keep-derivations"])
	}
	features, _ := s["experimental-features"].([]any)
	if !slices.Contains(features, any("flakes")) || !slices.Contains(features, any("nix-command")) {
		t.Errorf("experimental-features %v: want nix-command and flakes", s["experimental-features"])
	}
}

// TestNoNix: without nix-instantiate Eval says what to install.
func TestNoNix(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := nixoseval.Eval(t.Context(), t.TempDir(), nil)
	if !errors.Is(err, nixoseval.ErrNoNix) || !strings.Contains(err.Error(), "nix-bin") {
		t.Fatalf("err = %v, want ErrNoNix naming the package", err)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}
