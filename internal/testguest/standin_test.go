package testguest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// These tests run the guest's stand-in (guest/standin/armdev-standin) on the
// host in a temporary root (ARMDEV_STANDIN_ROOT), with mount, kill and chown
// recorded instead of run. Each runs under the host's sh and, when a busybox
// is found (ARMDEV_TEST_BUSYBOX or PATH), under busybox's sh and tools as
// well, which are what the guest has.

// standinScript is the stand-in, relative to this package.
const standinScript = "guest/standin/armdev-standin"

// standinRoot is one temporary guest root with the stock image's state.
type standinRoot struct {
	t    *testing.T
	root string // the guest's /
	bin  string // the stand-in under its command names
	sh   string // the shell that runs it
	path string // PATH for the stand-in
}

// toolset is the sh (and the tools in PATH) a stand-in runs with.
type toolset struct {
	name string
	sh   string // the shell that runs the script
	path string // PATH
}

// toolsets are the host's sh and, when found, busybox.
func toolsets(t *testing.T) []toolset {
	t.Helper()
	sets := []toolset{{name: "sh", sh: "sh", path: os.Getenv("PATH")}}
	bb := os.Getenv("ARMDEV_TEST_BUSYBOX")
	if bb == "" {
		bb, _ = exec.LookPath("busybox")
	}
	if bb == "" {
		return sets
	}
	dir := t.TempDir()
	for _, tool := range []string{"sh", "awk", "sed", "grep", "tr", "cut", "cat", "cp", "mv", "rm", "mkdir",
		"chmod", "mktemp", "head", "date", "id", "sort", "echo", "printf"} {
		if err := os.Symlink(bb, filepath.Join(dir, tool)); err != nil {
			t.Fatal(err)
		}
	}
	return append(sets, toolset{name: "busybox", sh: filepath.Join(dir, "sh"), path: dir})
}

// eachToolset runs f in a fresh stock root for every toolset.
func eachToolset(t *testing.T, f func(t *testing.T, s *standinRoot)) {
	for _, ts := range toolsets(t) {
		t.Run(ts.name, func(t *testing.T) { f(t, newStandinRoot(t, ts)) })
	}
}

// newStandinRoot makes a guest root as the image build does (armdev-standin
// stock), with a running sshd's pid file.
func newStandinRoot(t *testing.T, ts toolset) *standinRoot {
	t.Helper()
	script, err := filepath.Abs(standinScript)
	if err != nil {
		t.Fatal(err)
	}
	s := &standinRoot{t: t, root: t.TempDir(), bin: t.TempDir(), sh: ts.sh, path: ts.path}
	// The script dispatches on the name it is called by.
	for _, name := range []string{"nixos-rebuild", "nix-env", "nix-shell", "armdev-standin"} {
		if err := os.Symlink(script, filepath.Join(s.bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"var/log", "run", "etc/nixos", "etc/armdev"} {
		if err := os.MkdirAll(filepath.Join(s.root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s.write("/etc/fstab", "")
	s.write("/run/dropbear.pid", "4242\n")
	if r := s.run("armdev-standin", "stock"); r.code != 0 {
		t.Fatalf("armdev-standin stock: %s", r)
	}
	s.write("/stub.log", "")
	return s
}

// standinResult is one run of the stand-in.
type standinResult struct {
	stdout, stderr string
	code           int
}

func (r standinResult) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// run runs the stand-in as the command name with args.
func (s *standinRoot) run(name string, args ...string) standinResult {
	s.t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(s.t.Context(), s.sh, append([]string{filepath.Join(s.bin, name)}, args...)...)
	cmd.Env = append(os.Environ(), "ARMDEV_STANDIN_ROOT="+s.root, "PATH="+s.path, "TMPDIR="+s.t.TempDir())
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatalf("run %s: %v", name, err)
	}
	return standinResult{stdout.String(), stderr.String(), code}
}

// write puts text at the guest path p.
func (s *standinRoot) write(p, text string) {
	s.t.Helper()
	full := filepath.Join(s.root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(text), 0o644); err != nil {
		s.t.Fatal(err)
	}
}

// read returns the guest file p ("" when it does not exist).
func (s *standinRoot) read(p string) string {
	s.t.Helper()
	b, err := os.ReadFile(filepath.Join(s.root, p))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		s.t.Fatal(err)
	}
	return string(b)
}

// line returns the line of the guest file p that starts with prefix.
func (s *standinRoot) line(p, prefix string) string {
	for _, l := range strings.Split(s.read(p), "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// configure writes configuration.nix and security.nix as given and the
// identity, if any.
func (s *standinRoot) configure(config string, id *identity) {
	s.write("/etc/nixos/configuration.nix", config)
	s.write("/etc/nixos/security.nix", securityNix(true))
	if id != nil {
		s.write("/etc/armdev/identity.nix", id.nix())
	}
}

// identity is /etc/armdev/identity.nix in the exact format armdev writes.
type identity struct {
	user           string
	uid            int
	normal, system bool
	group          string
	gid            int // 0: null
	declareGroup   bool
	keys           []string
}

func (id identity) nix() string {
	gid := "null"
	if id.gid != 0 {
		gid = fmt.Sprint(id.gid)
	}
	var keys strings.Builder
	for _, k := range id.keys {
		fmt.Fprintf(&keys, "    %q\n", k)
	}
	return fmt.Sprintf(`# Written by armdev for one workspace; armdev rewrites it before every nixos-rebuild switch.
{
  user = %q;
  uid = %d;
  isNormalUser = %t;
  isSystemUser = %t;
  group = %q;
  gid = %s;
  declareGroup = %t;
  release = "26.05";
  authorizedKeys = [
%s  ];
}
`, id.user, id.uid, id.normal, id.system, id.group, gid, id.declareGroup, keys.String())
}

const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB6mnm9z6rV6ljB9ed5mxqXzPx3bwWUq2ydGVUq+BY7j armdev"

// systemUser501 is what a macOS host (uid 501, gid 20) gets.
var systemUser501 = identity{user: "armdev", uid: 501, system: true, group: "armdev", declareGroup: true, keys: []string{testKey}}

// testConfiguration is configuration.nix shaped like ours: the user from
// the identity, 9p mounts as literal lists (one spanning lines).
func testConfiguration(extra string) string {
	return `# armdev test configuration
{ config, lib, pkgs, ... }:
let
  identity = import ../armdev/identity.nix;
in
{
  imports = [ ./security.nix ];
  users.groups = lib.optionalAttrs identity.declareGroup {
    ${identity.group}.gid = identity.gid;
  };
  users.users.${identity.user} = {
    inherit (identity) uid isNormalUser isSystemUser group;
    extraGroups = [ "wheel" ];
    createHome = true;
    home = "/home/${identity.user}";
    useDefaultShell = true;
    openssh.authorizedKeys.keys = identity.authorizedKeys;
  };
  fileSystems."/rsonpath" = {
    device = "rsonpath";
    fsType = "9p";
    options = [ "trans=virtio" "version=9p2000.L" "msize=512000" "cache=mmap"
      "nofail" "x-systemd.requires=modprobe@9pnet_virtio.service" ];
  };
  fileSystems."/etc/nixos" = { device = "nixconfig"; fsType = "9p"; options = [ "trans=virtio" "cache=none" "nofail" ]; };
  fileSystems."/" = { device = "/dev/disk/by-label/NIXOS_SD"; fsType = "ext4"; };
` + extra + `}
`
}

// securityNix is security.nix shaped like ours.
func securityNix(immutable bool) string {
	mutable := ""
	if immutable {
		mutable = "  users.mutableUsers = false;\n"
	}
	return `{ ... }:
{
` + mutable + `  services.openssh.settings = {
    PasswordAuthentication = false;
    KbdInteractiveAuthentication = false;
    PermitRootLogin = "no";
  };
  users.users.root.hashedPassword = "!";
}
`
}

// installerConfiguration is what clone-config.nix writes on the SD image.
const installerConfiguration = `{ config, pkgs, ... }:

{
  imports = [ <nixpkgs/nixos/modules/installer/sd-card/sd-image-aarch64-installer.nix> ];

  
}
`

func TestStandinStockImage(t *testing.T) {
	eachToolset(t, func(t *testing.T, s *standinRoot) {
		// installation-device.nix: root and nixos with empty passwords.
		for p, want := range map[string][]string{
			"/etc/shadow": {"root::1::::::", "nixos::1::::::", "nobody:!:1::::::", "nixbld32:!:1::::::"},
			"/etc/passwd": {
				"root:x:0:0:System administrator:/root:/run/current-system/sw/bin/bash",
				"nixos:x:1000:100::/home/nixos:/run/current-system/sw/bin/bash",
				"nixbld1:x:30001:30000:Nix build user 1:/var/empty:/run/current-system/sw/bin/nologin",
				"nobody:x:65534:65534:Unprivileged account (don't use!):/var/empty:/run/current-system/sw/bin/nologin",
			},
			"/etc/group": {"root:x:0:", "wheel:x:1:nixos", "video:x:26:nixos", "lp:x:20:", "users:x:100:",
				"shadow:x:318:", "nogroup:x:65534:", "nixbld:x:30000:nixbld1,nixbld10,"},
			"/var/lib/armdev-standin/active-system": {"installer"},
		} {
			got := s.read(p)
			for _, w := range want {
				if !strings.Contains(got, w+"\n") && !strings.Contains(got, w) {
					t.Errorf("%s lacks %q:\n%s", p, w, got)
				}
			}
		}
		if got := strings.Count(s.read("/etc/passwd"), ":30000:Nix build user"); got != 32 {
			t.Errorf("%d nixbld users, want 32", got)
		}
		for _, name := range []string{"nixos", "root", "nobody", "nixbld1", "nixbld32"} {
			if !regexp.MustCompile(`(^| )` + name + `( |$)`).MatchString(s.read("/var/lib/nixos/declarative-users")) {
				t.Errorf("declarative-users lacks %s: %q", name, s.read("/var/lib/nixos/declarative-users"))
			}
		}
		if fi, err := os.Stat(filepath.Join(s.root, "home/nixos")); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("/home/nixos: %v %v, want a 0700 directory", fi, err)
		}
		if got := s.read("/var/log/armdev-standin.log"); got != "" {
			t.Errorf("making the stock image logged calls: %q", got)
		}
	})
}

func TestStandinBootWritesInstallerConfigurationUntilSwitched(t *testing.T) {
	eachToolset(t, func(t *testing.T, s *standinRoot) {
		if r := s.run("armdev-standin", "boot"); r.code != 0 {
			t.Fatalf("boot: %s", r)
		}
		if got := s.read("/etc/nixos/configuration.nix"); got != installerConfiguration {
			t.Fatalf("first boot wrote:\n%q\nwant clone-config.nix's\n%q", got, installerConfiguration)
		}
		s.write("/etc/nixos/configuration.nix", "# edited\n")
		s.run("armdev-standin", "boot")
		if got := s.read("/etc/nixos/configuration.nix"); got != "# edited\n" {
			t.Errorf("boot overwrote an existing configuration.nix: %q", got)
		}

		s.configure(testConfiguration(""), &systemUser501)
		if r := s.run("nixos-rebuild", "switch"); r.code != 0 {
			t.Fatalf("switch: %s", r)
		}
		os.Remove(filepath.Join(s.root, "etc/nixos/configuration.nix"))
		s.run("armdev-standin", "boot")
		if got := s.read("/etc/nixos/configuration.nix"); got != "" {
			t.Errorf("a boot after switching to our configuration wrote the installer's: %q", got)
		}
		if got := s.read("/var/log/armdev-standin.log"); strings.Contains(got, "armdev-standin") {
			t.Errorf("boot logged a call: %q", got)
		}
	})
}

func TestStandinRejectsNormalUserBelow1000(t *testing.T) {
	eachToolset(t, func(t *testing.T, s *standinRoot) {
		id := systemUser501
		id.normal, id.system = true, false
		s.configure(testConfiguration(""), &id)
		before := s.read("/etc/passwd")
		r := s.run("nixos-rebuild", "switch")
		want := `error:
       Failed assertions:
       - A user cannot have a users.users.armdev.uid set below 1000 and set users.users.armdev.isNormalUser.
       Either users.users.armdev.isSystemUser must be set to true instead of users.users.armdev.isNormalUser
       or users.users.armdev.uid must be changed to 1000 or above.
`
		if r.code != 1 || !strings.Contains(r.stderr, want) {
			t.Errorf("got %s\nwant exit 1 and\n%s", r, want)
		}
		if s.read("/etc/passwd") != before {
			t.Errorf("a refused configuration changed /etc/passwd")
		}
	})
}

func TestStandinAcceptsSystemUser501(t *testing.T) {
	eachToolset(t, func(t *testing.T, s *standinRoot) {
		s.configure(testConfiguration(""), &systemUser501)
		r := s.run("nixos-rebuild", "switch")
		if r.code != 0 {
			t.Fatalf("switch: %s", r)
		}
		// gid null: update-users-groups.pl allocates from 999 down.
		if got, want := s.line("/etc/passwd", "armdev:"), "armdev:x:501:999::/home/armdev:/run/current-system/sw/bin/bash"; got != want {
			t.Errorf("passwd: %q, want %q", got, want)
		}
		if got := s.line("/etc/group", "armdev:"); got != "armdev:x:999:" {
			t.Errorf("group: %q", got)
		}
		if got := s.line("/etc/group", "wheel:"); got != "wheel:x:1:armdev" {
			t.Errorf("wheel: %q", got)
		}
		// The stock image's nixos was declarative: gone now.
		if got := s.line("/etc/passwd", "nixos:"); got != "" {
			t.Errorf("nixos is still there: %q", got)
		}
		if !strings.Contains(r.stderr, "removing user ‘nixos’") {
			t.Errorf("switch did not say it removed nixos:\n%s", r.stderr)
		}
		if got := s.line("/etc/shadow", "armdev:"); got != "armdev:!:1::::::" {
			t.Errorf("shadow: %q", got)
		}
		if got := s.read("/home/armdev/.ssh/authorized_keys"); got != testKey+"\n" {
			t.Errorf("authorized_keys = %q", got)
		}
		stubs := s.read("/stub.log")
		for _, want := range []string{"chown 501:999 /home/armdev\n", "chown 501:999 /home/armdev/.ssh/authorized_keys\n", "kill 4242\n"} {
			if !strings.Contains(stubs, want) {
				t.Errorf("recorded commands lack %q:\n%s", want, stubs)
			}
		}
		if got := s.read("/etc/armdev-sshd-flags"); got != "-w -s\n" {
			t.Errorf("sshd flags %q, want -w -s (PermitRootLogin no, no passwords)", got)
		}
		if got := s.read("/var/lib/armdev-standin/active-system"); got != "configuration\n" {
			t.Errorf("active system %q", got)
		}

		// The same configuration again: nothing to restart.
		s.write("/stub.log", "")
		if r := s.run("nixos-rebuild", "switch"); r.code != 0 || strings.Contains(r.stderr, "restarting") {
			t.Errorf("second switch: %s", r)
		}
		if strings.Contains(s.read("/stub.log"), "kill") {
			t.Errorf("an unchanged sshd was restarted")
		}
	})
}

func TestStandinRejectsDuplicateIDs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		id    identity
		trace string
	}{
		{"gid 20 (lp)", identity{user: "armdev", uid: 501, system: true, group: "armdev", gid: 20, declareGroup: true, keys: []string{testKey}}, "trace: Duplicate gid 20"},
		{"uid 30001 (nixbld1)", identity{user: "armdev", uid: 30001, normal: true, group: "users", keys: []string{testKey}}, "trace: Duplicate uid 30001"},
		{"gid 100 declared again", identity{user: "armdev", uid: 1000, normal: true, group: "armdev", gid: 100, declareGroup: true, keys: []string{testKey}}, "trace: Duplicate gid 100"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eachToolset(t, func(t *testing.T, s *standinRoot) {
				s.configure(testConfiguration(""), &tc.id)
				r := s.run("nixos-rebuild", "switch")
				if r.code != 1 || !strings.Contains(r.stderr, "Failed assertions:\n       - UIDs and GIDs must be unique!\n") ||
					!strings.Contains(r.stderr, tc.trace) {
					t.Errorf("got %s\nwant exit 1, %q and UIDs and GIDs must be unique!", r, tc.trace)
				}
			})
		})
	}
}

func TestStandinOtherAssertions(t *testing.T) {
	for _, tc := range []struct {
		name   string
		id     identity
		config string
		want   string
	}{
		{"both kinds", identity{user: "armdev", uid: 1000, normal: true, system: true, group: "users", keys: []string{testKey}}, "",
			"- Exactly one of users.users.armdev.isSystemUser and users.users.armdev.isNormalUser must be set."},
		{"neither kind", identity{user: "armdev", uid: 1000, group: "users", keys: []string{testKey}}, "",
			"- Exactly one of users.users.armdev.isSystemUser and users.users.armdev.isNormalUser must be set."},
		{"undeclared group", identity{user: "armdev", uid: 501, system: true, group: "armdev", keys: []string{testKey}}, "",
			"- The following users have a primary group that is undefined: armdev\n       Hint: Add this to your NixOS configuration:\n         users.groups.armdev = {};"},
		{"empty group", identity{user: "armdev", uid: 501, system: true, group: "", keys: []string{testKey}}, "",
			"- users.users.armdev.group is unset."},
		{"bad name", identity{user: "arm dev", uid: 1000, normal: true, group: "users", keys: []string{testKey}}, "",
			`- The username "arm dev" is not valid, it does not match the regex "[a-zA-Z0-9_.][a-zA-Z0-9_.-]*".`},
		{"no key", identity{user: "armdev", uid: 1000, normal: true, group: "users"}, "",
			"- Neither the root account nor any wheel user has a password or SSH authorized key."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eachToolset(t, func(t *testing.T, s *standinRoot) {
				s.configure(testConfiguration(tc.config), &tc.id)
				if r := s.run("nixos-rebuild", "switch"); r.code != 1 || !strings.Contains(r.stderr, tc.want) {
					t.Errorf("got %s\nwant exit 1 and %q", r, tc.want)
				}
			})
		})
	}
	// Not in wheel: the key does not count against the lock-out assertion.
	eachToolset(t, func(t *testing.T, s *standinRoot) {
		s.configure(strings.Replace(testConfiguration(""), `extraGroups = [ "wheel" ];`, "", 1), &systemUser501)
		if r := s.run("nixos-rebuild", "switch"); r.code != 1 || !strings.Contains(r.stderr, "Neither the root account nor any wheel user") {
			t.Errorf("a configuration with no wheel user was accepted: %s", r)
		}
	})
}

func TestStandinMutableUsersAndRootsPassword(t *testing.T) {
	for _, tc := range []struct {
		immutable bool
		root      string
	}{
		// mutableUsers = true keeps existing shadow entries: root keeps
		// installation-device.nix's empty password.
		{false, "root::1::::::"},
		{true, "root:!:1::::::"},
	} {
		t.Run(fmt.Sprintf("immutable=%t", tc.immutable), func(t *testing.T) {
			eachToolset(t, func(t *testing.T, s *standinRoot) {
				s.configure(testConfiguration(""), &systemUser501)
				s.write("/etc/nixos/security.nix", securityNix(tc.immutable))
				if r := s.run("nixos-rebuild", "switch"); r.code != 0 {
					t.Fatalf("switch: %s", r)
				}
				if got := s.line("/etc/shadow", "root:"); got != tc.root {
					t.Errorf("root's shadow entry = %q, want %q", got, tc.root)
				}
			})
		})
	}
}

func TestStandinInstallerConfigurationRestoresStock(t *testing.T) {
	eachToolset(t, func(t *testing.T, s *standinRoot) {
		s.configure(testConfiguration(""), &systemUser501)
		if r := s.run("nixos-rebuild", "switch"); r.code != 0 {
			t.Fatalf("switch: %s", r)
		}
		os.Remove(filepath.Join(s.root, "etc/nixos/security.nix"))
		s.write("/etc/nixos/configuration.nix", installerConfiguration)
		s.write("/stub.log", "")
		r := s.run("nixos-rebuild", "switch")
		if r.code != 0 {
			t.Fatalf("switch to the installer: %s", r)
		}
		if got := s.read("/etc/armdev-sshd-flags"); got != "\n" {
			t.Errorf("sshd flags %q, want none (PermitRootLogin yes)", got)
		}
		if !strings.Contains(s.read("/stub.log"), "kill 4242") {
			t.Errorf("sshd was not restarted")
		}
		if got := s.line("/etc/shadow", "nixos:"); got != "nixos::1::::::" {
			t.Errorf("nixos's shadow entry %q, want an empty password again", got)
		}
		if got := s.line("/etc/passwd", "nixos:"); !strings.HasPrefix(got, "nixos:x:1000:100:") {
			t.Errorf("nixos's passwd entry %q", got)
		}
		if got := s.line("/etc/passwd", "armdev:"); got != "" {
			t.Errorf("armdev still there: %q", got)
		}
		if got := s.line("/etc/group", "armdev:"); got != "" {
			t.Errorf("group armdev still there: %q", got)
		}
		if got := s.read("/etc/fstab"); strings.Contains(got, " 9p ") {
			t.Errorf("9p mounts left in fstab:\n%s", got)
		}
		os.Remove(filepath.Join(s.root, "etc/nixos/configuration.nix"))
		s.run("armdev-standin", "boot")
		if got := s.read("/etc/nixos/configuration.nix"); got != installerConfiguration {
			t.Errorf("boot after switching back did not write the installer configuration: %q", got)
		}
	})
}

func TestStandinFailAfterActivation(t *testing.T) {
	eachToolset(t, func(t *testing.T, s *standinRoot) {
		s.configure("# "+FailAfterActivationMarker+"\n"+testConfiguration(""), &systemUser501)
		r := s.run("nixos-rebuild", "switch")
		if r.code != 4 || !strings.Contains(r.stderr, "warning: the following units failed: armdev-standin-deliberate-failure.service\n") {
			t.Errorf("got %s\nwant exit 4 and the failed units", r)
		}
		// Everything was activated first: root login is off.
		if got := s.read("/etc/armdev-sshd-flags"); got != "-w -s\n" {
			t.Errorf("sshd flags %q, want -w -s", got)
		}
		if !strings.Contains(s.read("/stub.log"), "kill 4242") {
			t.Errorf("sshd was not restarted before the failure")
		}
		if s.line("/etc/passwd", "armdev:") == "" {
			t.Errorf("armdev was not created before the failure")
		}
	})
}

func TestStandinFailMarker(t *testing.T) {
	eachToolset(t, func(t *testing.T, s *standinRoot) {
		s.configure("# "+FailMarker+"\n"+testConfiguration(""), &systemUser501)
		before := s.read("/etc/passwd")
		if r := s.run("nixos-rebuild", "switch"); r.code != 1 || !strings.Contains(r.stderr, "error: evaluation aborted") {
			t.Errorf("got %s, want an evaluation error", r)
		}
		if s.read("/etc/passwd") != before || s.read("/etc/armdev-sshd-flags") != "" {
			t.Errorf("an evaluation error activated something")
		}
	})
}

func TestStandin9pMounts(t *testing.T) {
	eachToolset(t, func(t *testing.T, s *standinRoot) {
		s.configure(testConfiguration(""), &systemUser501)
		// /etc/nixos is mounted already (provisioning mounts it).
		s.write("/proc/mounts", "nixconfig /etc/nixos 9p rw,relatime 0 0\n")
		if r := s.run("nixos-rebuild", "switch"); r.code != 0 {
			t.Fatalf("switch: %s", r)
		}
		mounts := regexp.MustCompile(`(?m)^mount .*$`).FindAllString(s.read("/stub.log"), -1)
		want := []string{"mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=mmap rsonpath /rsonpath"}
		if fmt.Sprint(mounts) != fmt.Sprint(want) {
			t.Errorf("mounted %q, want %q (nofail and x-* dropped, /etc/nixos left alone)", mounts, want)
		}
		fstab := s.read("/etc/fstab")
		for _, w := range []string{
			"rsonpath /rsonpath 9p trans=virtio,version=9p2000.L,msize=512000,cache=mmap 0 0\n",
			"nixconfig /etc/nixos 9p trans=virtio,cache=none 0 0\n",
		} {
			if !strings.Contains(fstab, w) {
				t.Errorf("fstab lacks %q:\n%s", w, fstab)
			}
		}
		if strings.Contains(fstab, "nofail") || strings.Contains(fstab, "x-systemd") || strings.Contains(fstab, "ext4") {
			t.Errorf("fstab:\n%s", fstab)
		}
	})
}

func TestStandinRefusesWhatItCannotRead(t *testing.T) {
	eachToolset(t, func(t *testing.T, s *standinRoot) {
		s.configure(strings.Replace(testConfiguration(""), `options = [ "trans=virtio" "cache=none" "nofail" ]`, "options = ninepOptions", 1), &systemUser501)
		if r := s.run("nixos-rebuild", "switch"); r.code != 1 || !strings.Contains(r.stderr, `cannot read the options of fileSystems."/etc/nixos"`) {
			t.Errorf("a non-literal options list: %s", r)
		}
	})
}

func TestStandinMissingIdentity(t *testing.T) {
	eachToolset(t, func(t *testing.T, s *standinRoot) {
		s.configure(testConfiguration(""), nil)
		r := s.run("nixos-rebuild", "switch")
		if r.code != 1 || !strings.Contains(r.stderr, "error: getting status of '/etc/armdev/identity.nix': No such file or directory\n") {
			t.Errorf("got %s", r)
		}
	})
}

func TestStandinKeepsUID(t *testing.T) {
	eachToolset(t, func(t *testing.T, s *standinRoot) {
		s.configure(testConfiguration(""), &systemUser501)
		s.run("nixos-rebuild", "switch")
		id := systemUser501
		id.uid = 502
		s.configure(testConfiguration(""), &id)
		r := s.run("nixos-rebuild", "switch")
		if r.code != 0 || !strings.Contains(r.stderr, "warning: not applying UID change of user ‘armdev’ (501 -> 502) in /etc/passwd") {
			t.Errorf("got %s", r)
		}
		if got := s.line("/etc/passwd", "armdev:"); !strings.HasPrefix(got, "armdev:x:501:") {
			t.Errorf("passwd: %q", got)
		}
	})
}

func TestStandinCallLog(t *testing.T) {
	eachToolset(t, func(t *testing.T, s *standinRoot) {
		s.configure(testConfiguration(""), &systemUser501)
		s.run("nixos-rebuild", "switch")
		if r := s.run("nix-env", "--delete-generations", "+1"); r.code != 0 {
			t.Errorf("nix-env: %s", r)
		}
		// nix-shell belongs to nix-standin now.
		if r := s.run("nix-shell", "--run", "true"); r.code == 0 {
			t.Errorf("the stand-in still answers to nix-shell: %s", r)
		}
		lines := strings.Split(strings.TrimSpace(s.read("/var/log/armdev-standin.log")), "\n")
		re := regexp.MustCompile(`^[0-9]+ uid=[0-9]+ user=\S+ cmd=(\S+) args=(.*)$`)
		var got []string
		for _, l := range lines {
			m := re.FindStringSubmatch(l)
			if m == nil {
				t.Errorf("log line %q is not <time> uid=… user=… cmd=… args=…", l)
				continue
			}
			got = append(got, m[1]+" "+m[2])
		}
		want := []string{"nixos-rebuild switch", "nix-env --delete-generations +1", "nix-shell --run true"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("logged %q, want %q", got, want)
		}
	})
}

// TestStandinAcceptsOurConfiguration switches the stand-in to the
// repository's own share/etc/nixos for the identities armdev writes.
func TestStandinAcceptsOurConfiguration(t *testing.T) {
	dir := filepath.Join("..", "..", "share", "etc", "nixos")
	files, _ := filepath.Glob(filepath.Join(dir, "*.nix"))
	var all strings.Builder
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all.Write(b)
	}
	if !strings.Contains(all.String(), "armdev/identity.nix") {
		t.Skip("share/etc/nixos does not read /etc/armdev/identity.nix yet")
	}
	for _, id := range []identity{
		systemUser501,
		{user: "armdev", uid: 1000, normal: true, group: "users", keys: []string{testKey}},
		{user: "armdev", uid: 1001, normal: true, group: "armdev", gid: 1001, declareGroup: true, keys: []string{testKey}},
	} {
		t.Run(fmt.Sprintf("uid %d group %s", id.uid, id.group), func(t *testing.T) {
			s := newStandinRoot(t, toolsets(t)[0])
			for _, f := range files {
				b, _ := os.ReadFile(f)
				s.write("/etc/nixos/"+filepath.Base(f), string(b))
			}
			s.write("/etc/armdev/identity.nix", id.nix())
			if r := s.run("nixos-rebuild", "switch"); r.code != 0 {
				t.Fatalf("switch: %s", r)
			}
			entry := s.line("/etc/passwd", id.user+":")
			if !strings.HasPrefix(entry, fmt.Sprintf("%s:x:%d:", id.user, id.uid)) || !strings.HasSuffix(entry, ":/home/armdev:/run/current-system/sw/bin/bash") {
				t.Errorf("passwd entry %q: want uid %d, a home and bash", entry, id.uid)
			}
			if got := s.read("/home/armdev/.ssh/authorized_keys"); got != testKey+"\n" {
				t.Errorf("authorized_keys = %q", got)
			}
			if got := s.line("/etc/group", "wheel:"); got != "wheel:x:1:"+id.user {
				t.Errorf("wheel = %q", got)
			}
			if got := s.line("/etc/shadow", "root:"); got != "root:!:1::::::" {
				t.Errorf("root's shadow entry %q", got)
			}
			if got := s.read("/etc/armdev-sshd-flags"); !strings.Contains(got, "-w") {
				t.Errorf("sshd flags %q: root may still log in", got)
			}
		})
	}
}
