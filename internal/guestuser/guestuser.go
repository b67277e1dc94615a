// Package guestuser chooses how the guest's account is declared so that
// NixOS accepts it and it can write what the host user owns on the 9p
// share, and renders that choice as the identity file the guest's
// configuration.nix reads (/etc/armdev/identity.nix).
//
// The rules come from nixpkgs: nixos/modules/config/users-groups.nix (its
// assertions), nixos/modules/misc/ids.nix (static ids, reserved ranges) and
// nixos/modules/config/update-users-groups.pl (what activation keeps).
package guestuser

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// DefaultUser is the guest account's name when ARMDEV_USER is not set.
const DefaultUser = "armdev"

// fallbackID is the uid (and, for a root host, the gid) used when the host's
// cannot be mirrored: the first id NixOS gives normal users.
const fallbackID = 1000

// usersGID is the gid of NixOS's `users` group (ids.nix), which
// users-groups.nix always declares.
const usersGID = 100

// Identity is how the guest user is declared so that NixOS accepts it and it
// owns what the host user owns on the 9p share (security_model=none: files
// keep host ownership and the guest kernel checks mode bits).
type Identity struct {
	User         string   // ARMDEV_USER, default "armdev"
	UID          int      // the guest user's uid
	IsNormalUser bool     // exactly one of IsNormalUser and IsSystemUser
	IsSystemUser bool     // a uid below 1000, which NixOS refuses for normal users
	Group        string   // "users" when the host gid is 100, else User
	GID          int      // meaningful only when HasGID
	HasGID       bool     // false: let NixOS allocate (the host gid would collide)
	DeclareGroup bool     // false when Group is an existing NixOS group ("users")
	Notes        []string // what the user should know (e.g. the share is read-only for some files)
}

// For maps the host user's uid and gid to the guest account named user.
//
// The host uid is used wherever NixOS allows it, because only then does the
// guest user own the host user's files on the share:
//   - uid ≥ 1000 and not reserved: a normal user with that uid;
//   - uid 1–999 and not reserved: NixOS asserts `isNormalUser && uid != null
//     -> uid >= 1000`, but accepts any uid for a system user, so the account
//     is a system user; configuration.nix still gives it a home, the default
//     login shell and wheel (a system user gets neither home nor shell by
//     default). NixOS also hands out 400–999 to system accounts it
//     allocates, from 999 down; one the image made first keeps its uid, and
//     armdev-provision.sh reports such a shared uid;
//   - a reserved uid (a static uid of ids.nix, the nixbld range, systemd's
//     DynamicUser range, the sentinels) would break `nixos-rebuild switch`
//     now or once the matching service is enabled: uid 1000, with a Note;
//   - root (uid 0): uid 1000 and gid 1000, with a Note.
//
// The group: gid 100 is NixOS's `users`, which exists already; a reserved
// gid becomes a group named user with no fixed gid (NixOS allocates one);
// any other gid becomes a group named user with that gid.
func For(hostUID, hostGID int, user string) Identity {
	id := Identity{User: user, Group: user, DeclareGroup: true}
	if hostUID == 0 {
		// QEMU running as root can give files any owner, so the guest's
		// choice decides what the host sees. uid 0 itself cannot be
		// mirrored: root is declared by NixOS, and a second uid-0 account
		// would be root.
		id.UID, id.IsNormalUser = fallbackID, true
		id.GID, id.HasGID = fallbackID, true
		id.Notes = append(id.Notes, fmt.Sprintf("armdev runs as root: the guest user %s gets uid %d and gid %d; "+
			"QEMU running as root gives the files the guest creates in /rsonpath to uid %d on the host, "+
			"and the guest can change only files uid %d may write: make the project writable by uid %d "+
			"(or run armdev as an ordinary user)", user, fallbackID, fallbackID, fallbackID, fallbackID, fallbackID))
		return id
	}

	switch why, reserved := reservedUID(hostUID); {
	case reserved:
		id.UID, id.IsNormalUser = fallbackID, true
		id.Notes = append(id.Notes, fmt.Sprintf("NixOS reserves your uid %d (%s): the guest user %s gets uid %d, "+
			"so files in /rsonpath that only uid %d may write are read-only in the guest", hostUID, why, user, fallbackID, hostUID))
	case hostUID < 1000:
		id.UID, id.IsSystemUser = hostUID, true
	default:
		id.UID, id.IsNormalUser = hostUID, true
	}

	switch why, reserved := reservedGID(hostGID); {
	case hostGID == usersGID:
		// NixOS declares `users` itself; declaring it again with
		// gid 100 would be a second definition of the same group.
		id.Group, id.DeclareGroup = "users", false
	case reserved:
		// Files on the share keep the host gid; in the guest they show
		// NixOS's group of that gid, which the guest user is not in.
		id.Notes = append(id.Notes, fmt.Sprintf("NixOS reserves your gid %d (%s): the guest user's group %s gets a gid NixOS picks, "+
			"so group permissions of files in /rsonpath do not apply to the guest user", hostGID, why, user))
	default:
		id.GID, id.HasGID = hostGID, true
	}
	return id
}

// reservedUID says whether NixOS keeps uid for itself, and why.
func reservedUID(uid int) (string, bool) {
	return reservedID(uid, staticUIDs)
}

// reservedGID says whether NixOS keeps gid for itself, and why.
func reservedGID(gid int) (string, bool) {
	return reservedID(gid, staticGIDs)
}

func reservedID(n int, static map[string]int) (string, bool) {
	if n < 0 || int64(n) > 4294967295 {
		return "it is not a valid id", true
	}
	names := []string{}
	for name, v := range static {
		if v == n {
			names = append(names, name)
		}
	}
	if len(names) > 0 {
		// No two names share an id in ids.nix today; sort for a stable
		// message should that change.
		sort.Strings(names)
		return "ids.nix gives it to " + strings.Join(names, " and "), true
	}
	for _, r := range reservedRanges {
		if int64(n) >= r.lo && int64(n) <= r.hi {
			return "it is in " + r.what, true
		}
	}
	return "", false
}

// nameRE is users-groups.nix's nameRegex (shadow's is_valid_name without the
// trailing $), anchored: builtins.match must match the whole name.
var nameRE = regexp.MustCompile(`^[a-zA-Z0-9_.][a-zA-Z0-9_.-]*$`)

// nixbldRE matches the build users nix-daemon.nix declares (nixbld1…).
var nixbldRE = regexp.MustCompile(`^nixbld[0-9]+$`)

// imageAccounts are accounts the stock SD image or our configuration has
// that ids.nix does not list (their ids are allocated at activation).
// update-users-groups.pl keeps an existing account's uid ("not applying UID
// change"), so reusing one of these names would keep the image's uid
// instead of the host's; nixos is the installer's user.
var imageAccounts = map[string]string{
	"nixos":          "the installer image's own user",
	"sshd":           "OpenSSH's privilege-separation account",
	"nscd":           "the name-service cache's account",
	"dhcpcd":         "the DHCP client's account",
	"systemd-oom":    "systemd-oomd's account",
	"wpa_supplicant": "the Wi-Fi daemon's account",
}

// ValidName checks user against NixOS's user-name rules and refuses names
// NixOS (or the stock image) declares itself. The error is one line naming
// the rule, meant to follow "ARMDEV_USER=… is not valid: ".
func ValidName(user string) error {
	switch {
	case user == "":
		return fmt.Errorf("the guest user needs a name")
	case len(user) > 31:
		// users-groups.nix aborts: "Username '…' is longer than 31
		// characters which is not allowed!"
		return fmt.Errorf("NixOS allows user names of at most 31 characters")
	case !nameRE.MatchString(user):
		return fmt.Errorf("NixOS user names match %s", strings.Trim(nameRE.String(), "^$"))
	case user == "." || user == "..":
		// The regex allows them, but the home would be /home/. or
		// /home/.., which createHome would hand to this user.
		return fmt.Errorf("%q would make the home directory /home or /", user)
	case isDigits(user):
		// shadow's is_valid_name refuses these: chown and friends read
		// them as numeric ids.
		return fmt.Errorf("a name of digits only reads as a numeric id")
	}
	if _, ok := staticUIDs[user]; ok {
		return fmt.Errorf("NixOS has an account named %s itself (ids.nix): choose another name", user)
	}
	if _, ok := staticGIDs[user]; ok {
		// The guest user's group is named after it: it would redeclare
		// NixOS's group of that name.
		return fmt.Errorf("NixOS has a group named %s itself (ids.nix): choose another name", user)
	}
	if nixbldRE.MatchString(user) {
		return fmt.Errorf("NixOS has an account named %s itself (Nix's build users): choose another name", user)
	}
	if what, ok := imageAccounts[user]; ok {
		return fmt.Errorf("%s is %s in the guest: choose another name", user, what)
	}
	return nil
}

func isDigits(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}

// Render writes id as the identity file configuration.nix imports from
// ../armdev/identity.nix. The stand-in guest's nixos-rebuild reads it line
// by line, so the layout is fixed: one `name = value;` per line in this
// order, one authorized key per line.
func Render(id Identity, release string, authorizedKeys []string) []byte {
	var b strings.Builder
	b.WriteString("# Written by armdev for one workspace; armdev rewrites it before every nixos-rebuild switch.\n")
	b.WriteString("{\n")
	fmt.Fprintf(&b, "  user = %s;\n", nixString(id.User))
	fmt.Fprintf(&b, "  uid = %d;\n", id.UID)
	fmt.Fprintf(&b, "  isNormalUser = %t;\n", id.IsNormalUser)
	fmt.Fprintf(&b, "  isSystemUser = %t;\n", id.IsSystemUser)
	fmt.Fprintf(&b, "  group = %s;\n", nixString(id.Group))
	if id.HasGID {
		fmt.Fprintf(&b, "  gid = %d;\n", id.GID)
	} else {
		b.WriteString("  gid = null;\n")
	}
	fmt.Fprintf(&b, "  declareGroup = %t;\n", id.DeclareGroup)
	fmt.Fprintf(&b, "  release = %s;\n", nixString(release))
	b.WriteString("  authorizedKeys = [\n")
	for _, k := range authorizedKeys {
		fmt.Fprintf(&b, "    %s\n", nixString(k))
	}
	b.WriteString("  ];\n")
	b.WriteString("}\n")
	return []byte(b.String())
}

// nixString quotes s as a Nix double-quoted string: backslash and quote are
// escaped, "${" would start an interpolation, and line breaks and tabs are
// written as escapes so that every value stays on its line.
func nixString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '$':
			if i+1 < len(s) && s[i+1] == '{' {
				b.WriteByte('\\')
			}
			b.WriteByte('$')
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
