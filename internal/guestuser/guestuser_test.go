package guestuser

import (
	"fmt"
	"strings"
	"testing"
)

// hostIDs are the host identities the mapping must handle: root (CI),
// macOS (501/20, gid 20 is NixOS's lp), NixOS and openSUSE (primary group
// users = 100), the common Linux 1000/1000 and 1001/1001, nobody, a Nix
// build user, a uid below 1000 that NixOS does not use, one in systemd's
// DynamicUser range, 65535, a gid that is a static NixOS gid above 1000,
// and large directory-service ids.
var hostIDs = []struct{ uid, gid int }{
	{0, 0}, {501, 20}, {1000, 100}, {1000, 1000}, {1001, 1001}, {65534, 65534},
	{30001, 30000}, {999, 999}, {42, 42}, {13, 13}, {61184, 61184}, {65535, 65535},
	{1000, 31001}, {1234567, 1234567}, {4294967294, 4294967294},
}

// nixbldUIDs are the build users nix-daemon.nix declares by default
// (nrBuildUsers = max 32 max-jobs).
func nixbldUIDs() []int {
	var ids []int
	for n := 1; n <= 32; n++ {
		ids = append(ids, staticUIDs["nixbld"]+n)
	}
	return ids
}

// inReservedRange says whether id is in a range ids.nix keeps free.
func inReservedRange(id int) bool {
	return (id >= 30000 && id <= 31000) || (id >= 61184 && id <= 65519) ||
		id == 65535 || int64(id) >= 4294967294
}

// TestForSatisfiesNixOS checks every mapping against NixOS's own rules, not
// against an expected struct: users-groups.nix's assertions, uniqueness
// against what ids.nix and nix-daemon.nix reserve, and that the guest user
// mirrors the host uid whenever NixOS allows it.
func TestForSatisfiesNixOS(t *testing.T) {
	for _, h := range hostIDs {
		t.Run(fmt.Sprintf("%d_%d", h.uid, h.gid), func(t *testing.T) {
			id := For(h.uid, h.gid, "armdev")
			t.Logf("%+v", id)
			if id.User != "armdev" {
				t.Errorf("User = %q, want armdev", id.User)
			}
			// "Exactly one of … isSystemUser and … isNormalUser must be
			// set", with NixOS's isEffectivelySystemUser.
			effectivelySystem := id.IsSystemUser || (id.UID < 1000 && !id.IsNormalUser)
			if effectivelySystem == id.IsNormalUser {
				t.Errorf("isNormalUser=%t isSystemUser=%t uid=%d: NixOS wants exactly one", id.IsNormalUser, id.IsSystemUser, id.UID)
			}
			if id.IsNormalUser && id.UID < 1000 {
				t.Errorf("normal user with uid %d < 1000", id.UID)
			}
			// "UIDs and GIDs must be unique!": against every static uid
			// (declared whenever its service is enabled) and the build users.
			for name, uid := range staticUIDs {
				if id.UID == uid {
					t.Errorf("uid %d is ids.nix's %s", id.UID, name)
				}
			}
			for _, uid := range nixbldUIDs() {
				if id.UID == uid {
					t.Errorf("uid %d is a Nix build user's", id.UID)
				}
			}
			if inReservedRange(id.UID) {
				t.Errorf("uid %d is in a range ids.nix reserves", id.UID)
			}
			if id.HasGID {
				for name, gid := range staticGIDs {
					if id.GID == gid {
						t.Errorf("gid %d is ids.nix's %s", id.GID, name)
					}
				}
				if inReservedRange(id.GID) {
					t.Errorf("gid %d is in a range ids.nix reserves", id.GID)
				}
			}
			// The primary group exists: declared by us, or NixOS's own.
			if id.Group == "" {
				t.Error("no primary group")
			}
			if id.DeclareGroup {
				if id.Group != id.User {
					t.Errorf("declares group %q, want one named after the user", id.Group)
				}
				if _, ok := staticGIDs[id.Group]; ok {
					t.Errorf("declares %q, which NixOS declares itself", id.Group)
				}
			} else {
				if _, ok := staticGIDs[id.Group]; !ok {
					t.Errorf("group %q is neither declared nor NixOS's", id.Group)
				}
				if id.HasGID {
					t.Error("a gid for a group that is not declared")
				}
			}
			// Writability: the guest user owns the host user's files
			// whenever NixOS leaves the host uid free.
			_, static := reservedUID(h.uid)
			if h.uid != 0 && !static && id.UID != h.uid {
				t.Errorf("uid %d, want the host's %d: /rsonpath would be read-only", id.UID, h.uid)
			}
			if (h.uid == 0 || static) && len(id.Notes) == 0 {
				t.Error("the host uid cannot be mirrored but no Note says so")
			}
			if h.gid == 100 && id.Group != "users" {
				t.Errorf("host gid 100: group %q, want NixOS's users", id.Group)
			}
		})
	}
}

// TestForCases pins what the README promises for the common hosts.
func TestForCases(t *testing.T) {
	cases := []struct {
		uid, gid  int
		wantUID   int
		system    bool
		group     string
		gid2      int // 0: no fixed gid
		noteParts []string
	}{
		{0, 0, 1000, false, "armdev", 1000, []string{"runs as root", "uid 1000", "writable by uid 1000"}},
		{501, 20, 501, true, "armdev", 0, []string{"gid 20", "lp"}},
		{1000, 100, 1000, false, "users", 0, nil},
		{1000, 1000, 1000, false, "armdev", 1000, nil},
		{65534, 65534, 1000, false, "armdev", 0, []string{"uid 65534", "nobody", "read-only", "gid 65534", "nogroup"}},
		{30001, 30000, 1000, false, "armdev", 0, []string{"uid 30001", "build users", "read-only", "nixbld"}},
	}
	for _, c := range cases {
		id := For(c.uid, c.gid, "armdev")
		if id.UID != c.wantUID || id.IsSystemUser != c.system || id.Group != c.group {
			t.Errorf("For(%d, %d) = uid %d system %t group %q, want %d %t %q", c.uid, c.gid, id.UID, id.IsSystemUser, id.Group, c.wantUID, c.system, c.group)
		}
		if got := map[bool]int{true: id.GID}[id.HasGID]; got != c.gid2 {
			t.Errorf("For(%d, %d): gid %d (HasGID %t), want %d", c.uid, c.gid, id.GID, id.HasGID, c.gid2)
		}
		notes := strings.Join(id.Notes, "\n")
		for _, p := range c.noteParts {
			if !strings.Contains(notes, p) {
				t.Errorf("For(%d, %d): notes %q lack %q", c.uid, c.gid, notes, p)
			}
		}
		if len(c.noteParts) == 0 && len(id.Notes) > 0 {
			t.Errorf("For(%d, %d): unexpected notes %q", c.uid, c.gid, notes)
		}
	}
}

func TestValidName(t *testing.T) {
	good := []string{"armdev", "alice", "dev_1", "a.b", "x-y", "_svc", strings.Repeat("a", 31)}
	for _, n := range good {
		if err := ValidName(n); err != nil {
			t.Errorf("ValidName(%q) = %v, want nil", n, err)
		}
	}
	bad := map[string]string{
		"":                      "name",
		strings.Repeat("a", 32): "31 characters",
		"-x":                    "match",
		"a b":                   "match",
		"a:b":                   "match",
		"é":                     "match",
		".":                     "home",
		"..":                    "home",
		"1234":                  "digits",
		"root":                  "account named root",
		"nobody":                "account named nobody",
		"postfix":               "account named postfix",
		"users":                 "group named users",
		"wheel":                 "group named wheel",
		"nixbld":                "nixbld",
		"nixbld7":               "build users",
		"sshd":                  "OpenSSH",
		"nixos":                 "installer",
	}
	for n, want := range bad {
		err := ValidName(n)
		if err == nil {
			t.Errorf("ValidName(%q) = nil, want an error about %q", n, want)
			continue
		}
		if !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("ValidName(%q) = %q, want one line mentioning %q", n, err, want)
		}
	}
}

// TestRenderFormat pins the layout the stand-in guest's nixos-rebuild and
// armdev-provision.sh read line by line.
func TestRenderFormat(t *testing.T) {
	id := For(501, 20, "armdev")
	got := string(Render(id, "26.05", []string{"ssh-ed25519 AAAAC3Nza armdev", "ssh-rsa BBBB other"}))
	want := `# Written by armdev for one workspace; armdev rewrites it before every nixos-rebuild switch.
{
  user = "armdev";
  uid = 501;
  isNormalUser = false;
  isSystemUser = true;
  group = "armdev";
  gid = null;
  declareGroup = true;
  release = "26.05";
  authorizedKeys = [
    "ssh-ed25519 AAAAC3Nza armdev"
    "ssh-rsa BBBB other"
  ];
}
`
	if got != want {
		t.Errorf("Render:\n%s\nwant:\n%s", got, want)
	}
	got = string(Render(For(1000, 1000, "dev"), "unstable", nil))
	for _, line := range []string{"  uid = 1000;\n", "  isNormalUser = true;\n", "  gid = 1000;\n", "  release = \"unstable\";\n", "  authorizedKeys = [\n  ];\n"} {
		if !strings.Contains(got, line) {
			t.Errorf("Render(1000/1000) lacks %q:\n%s", line, got)
		}
	}
}

func TestNixString(t *testing.T) {
	cases := map[string]string{
		`plain`:        `"plain"`,
		`a"b`:          `"a\"b"`,
		`back\slash`:   `"back\\slash"`,
		`${x}`:         `"\${x}"`,
		`$${x}`:        `"$\${x}"`,
		`cost $5`:      `"cost $5"`,
		"two\nlines\t": `"two\nlines\t"`,
	}
	for in, want := range cases {
		if got := nixString(in); got != want {
			t.Errorf("nixString(%q) = %s, want %s", in, got, want)
		}
	}
}
