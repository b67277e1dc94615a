// Package e2e drives armdev's real `just` recipes against a real aarch64
// guest booted by real QEMU and u-boot: the stand-in guest laid out like the
// NixOS SD image, served by a fake Hydra on loopback.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rsonpath/armdev/internal/harness"
	"github.com/rsonpath/armdev/internal/testguest"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// TestEndToEnd: init (download → prepare → provision) → start → status →
// the guest as provisioned → a second workspace beside it → commands over
// SSH → the shared folder → update and tidy → the dev shell → console →
// OpenSSH → shutdown → start → kill (also without a pid file) → reset →
// start → a changed host key.
func TestEndToEnd(t *testing.T) {
	if os.Getenv("ARMDEV_E2E") != "1" {
		t.Skip("set ARMDEV_E2E=1 to boot the aarch64 stand-in guest (see README)")
	}
	if missing := harness.Prerequisites(); len(missing) > 0 {
		t.Fatalf("ARMDEV_E2E=1 but prerequisites are missing:\n%s", strings.Join(missing, "\n"))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 25*time.Minute)
	defer cancel()
	h, err := harness.New(ctx, repoRoot(t), t.TempDir(), testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	t.Cleanup(func() { h.Just(context.Background(), nil, "arm-dev-kill") })
	logCmdlineOnFailure(t, h)

	must := func(r harness.Result, what string) harness.Result {
		t.Helper()
		if r.Code != 0 {
			t.Fatalf("%s failed: %s", what, r)
		}
		return r
	}
	ssh := func(args ...string) harness.Result {
		return h.Just(ctx, nil, append([]string{"arm-dev-ssh"}, args...)...)
	}

	// init: download, prepare, provision.
	r := must(h.Just(ctx, nil, "arm-dev-init"), "arm-dev-init")
	if !strings.Contains(r.Stdout, "provisioned") {
		t.Errorf("init did not report provisioning:\n%s", r)
	}
	if n := countRequests(h, "/download/"); n != 1 {
		t.Errorf("the image was downloaded %d times, want 1", n)
	}
	// A second init changes nothing and asks nothing of Hydra.
	h.Hydra.ResetLog()
	must(h.Just(ctx, nil, "arm-dev-init"), "second arm-dev-init")
	if reqs := h.Hydra.Requests(); len(reqs) != 0 {
		t.Errorf("second init made requests: %v", reqs)
	}

	// start, and SSH listens on 127.0.0.1 only.
	must(h.Just(ctx, nil, "arm-dev"), "arm-dev")
	if addrs := listeners(t, h.Port); len(addrs) != 1 || addrs[0] != "127.0.0.1" {
		t.Errorf("port %d listens on %v, want only 127.0.0.1", h.Port, addrs)
	}
	r = must(h.Just(ctx, nil, "arm-dev-status"), "arm-dev-status")
	for _, want := range []string{"running", fmt.Sprintf("127.0.0.1:%d", h.Port), "Hydra build", "applied", "devshell: none"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, r.Stdout)
		}
	}
	// Starting a running guest says so and succeeds.
	r = must(h.Just(ctx, nil, "arm-dev"), "arm-dev while running")
	if !strings.Contains(r.Stdout, "already running") {
		t.Errorf("second start: %s", r)
	}
	// The same workspace through another spelling of its state folder.
	link := filepath.Join(t.TempDir(), "state-link")
	if err := os.Symlink(h.State, link); err != nil {
		t.Fatal(err)
	}
	h.Extra = []string{"ARMDEV_STATE_DIR=" + link}
	r = must(h.Just(ctx, nil, "arm-dev-status"), "status through a symlinked state folder")
	h.Extra = nil
	if !strings.Contains(r.Stdout, "guest:   running") {
		t.Errorf("through a symlink the running guest is not seen:\n%s", r.Stdout)
	}
	if _, err := os.Stat(h.PIDFile()); err != nil {
		t.Errorf("status through a symlink lost the pid file: %v", err)
	}

	provisionedAsNixOSWould(t, h, ssh)

	// A second workspace runs side by side: its own state, its own port,
	// its own user, and its own identity in its own guest.
	sideBySide(t, ctx, h)
	r = must(h.Just(ctx, nil, "arm-dev-status"), "status after the second workspace")
	if !strings.Contains(r.Stdout, "config:  share/etc/nixos applied") {
		t.Errorf("the second workspace changed the first one's applied configuration:\n%s", r.Stdout)
	}

	// commands over SSH: architecture, exit status, quoting, stdin.
	if r = must(ssh("uname", "-m"), "uname"); strings.TrimSpace(r.Stdout) != "aarch64" {
		t.Errorf("uname -m = %q", r.Stdout)
	}
	if r = ssh("sh", "-c", "exit 7"); r.Code != 7 {
		t.Errorf("exit status: %s", r)
	}
	if r = must(ssh("sh", "-c", `echo "a  b"`), "quoting"); r.Stdout != "a  b\n" {
		t.Errorf("quoting: %q", r.Stdout)
	}
	if r = must(h.Just(ctx, strings.NewReader("hi there\n"), "arm-dev-ssh", "cat"), "stdin"); r.Stdout != "hi there\n" {
		t.Errorf("stdin: %q", r.Stdout)
	}
	if r = must(ssh("pwd"), "pwd"); strings.TrimSpace(r.Stdout) != "/rsonpath" {
		t.Errorf("commands run in %q, want /rsonpath", r.Stdout)
	}

	sharedFolder(t, h, ssh)

	// update and tidy run the guest's tools as the guest user through sudo.
	must(h.Just(ctx, nil, "arm-dev-update"), "arm-dev-update")
	must(h.Just(ctx, nil, "arm-dev-tidy"), "arm-dev-tidy")
	// provisioning: root's switch; update: armdev's sudo, then a root switch;
	// tidy: armdev's nix-env, then root's nix-env and nix-store through sudo.
	wantCalls(t, nixCalls(standinCalls(t, ssh)), []string{
		"uid=0 user=root cmd=nixos-rebuild args=switch",
		"user=armdev cmd=sudo args=nixos-rebuild switch",
		"uid=0 user=root cmd=nixos-rebuild args=switch",
		"user=armdev cmd=nix-env args=--delete-generations +1",
		"user=armdev cmd=sudo args=nix-env --profile /nix/var/nix/profiles/system --delete-generations +2",
		"uid=0 user=root cmd=nix-env args=--profile /nix/var/nix/profiles/system --delete-generations +2",
		"user=armdev cmd=sudo args=nix-store --gc",
		"uid=0 user=root cmd=nix-store args=--gc",
	})
	updateNeedsTheShare(t, ctx, h, ssh)

	devShell(t, ctx, h, ssh)

	// the serial console: a shell on ttyAMA0 in the stand-in; Ctrl-] detaches.
	interactive(t, ctx, h, "just arm-dev-console", "C-]", nil)

	// the generated config works with the system's OpenSSH client.
	must(h.Just(ctx, nil, "arm-dev-ssh-config"), "arm-dev-ssh-config")
	cfg := h.Layout().SSHConfig()
	if r = must(h.Command(ctx, nil, "ssh", "-F", cfg, "armdev", "uname -m"), "ssh -F"); strings.TrimSpace(r.Stdout) != "aarch64" {
		t.Errorf("ssh -F: %s", r)
	}
	// after provisioning, root may not log in, even with the workspace key.
	if r = h.Command(ctx, nil, "ssh", "-F", cfg, "-l", "root", "armdev", "true"); r.Code == 0 {
		t.Errorf("root logged in over SSH after provisioning: %s", r)
	}

	// something only the guest's disk holds, to see reset discard it.
	must(ssh("touch", "/home/armdev/made-after-provisioning"), "touch in guest")

	// shutdown: QEMU exits, the pid file goes.
	pid := h.PID()
	must(h.Just(ctx, nil, "arm-dev-shutdown"), "arm-dev-shutdown")
	if alive(pid) || h.PID() != 0 {
		t.Errorf("after shutdown: pid %d alive=%v, pid file %d", pid, alive(pid), h.PID())
	}

	// start → kill.
	must(h.Just(ctx, nil, "arm-dev"), "arm-dev after shutdown")
	must(ssh("test", "-e", "/home/armdev/made-after-provisioning"), "file survives a reboot")
	pid = h.PID()
	must(h.Just(ctx, nil, "arm-dev-kill"), "arm-dev-kill")
	if alive(pid) || h.PID() != 0 {
		t.Errorf("after kill: pid %d alive=%v, pid file %d", pid, alive(pid), h.PID())
	}

	// kill with a stale pid file naming an unrelated live process.
	decoy := startDecoy(t)
	if err := os.WriteFile(h.PIDFile(), []byte(strconv.Itoa(decoy.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	must(h.Just(ctx, nil, "arm-dev-kill"), "arm-dev-kill with a stale pid file")
	if !alive(decoy.Process.Pid) {
		t.Errorf("kill killed an unrelated process named armdev-guest")
	}
	if h.PID() != 0 {
		t.Errorf("stale pid file not removed")
	}

	// A guest whose pid file is gone is still found, by its name and disk.
	must(h.Just(ctx, nil, "arm-dev"), "arm-dev for the lost pid file")
	pid = h.PID()
	if err := os.Remove(h.PIDFile()); err != nil {
		t.Fatal(err)
	}
	r = must(h.Just(ctx, nil, "arm-dev-status"), "status without a pid file")
	if !strings.Contains(r.Stdout, fmt.Sprintf("running (pid %d, found by its name and disk", pid)) {
		t.Errorf("status without a pid file:\n%s", r.Stdout)
	}
	r = must(h.Just(ctx, nil, "arm-dev-kill"), "kill without a pid file")
	if alive(pid) || !strings.Contains(r.Stdout, fmt.Sprintf("killed QEMU (pid %d", pid)) {
		t.Errorf("kill without a pid file: alive=%v\n%s", alive(pid), r)
	}

	// reset needs a yes, then returns to the provisioned state.
	h.Extra = []string{"ARMDEV_YES=0"}
	if r = h.Just(ctx, nil, "arm-dev-reset"); r.Code == 0 {
		t.Errorf("reset without a yes succeeded: %s", r)
	}
	h.Extra = []string{"ARMDEV_YES=1"}
	must(h.Just(ctx, nil, "arm-dev-reset"), "arm-dev-reset")
	h.Extra = nil
	must(h.Just(ctx, nil, "arm-dev"), "arm-dev after reset")
	if r = ssh("test", "-e", "/home/armdev/made-after-provisioning"); r.Code != 1 {
		t.Errorf("reset kept a file made after provisioning: %s", r)
	}
	if got := filter(standinCalls(t, ssh), "cmd=nixos-rebuild args=switch"); len(got) != 1 {
		t.Errorf("after reset the guest should be back to one provisioning switch, got %q", got)
	}

	// a different host key on the guest's port is refused, with the reason.
	knownHosts := h.Layout().KnownHosts()
	pinned, err := os.ReadFile(knownHosts)
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(pinned))
	fake := h.Command(ctx, nil, "sh", "-c", "ssh-keygen -q -t ed25519 -N '' -f \"$0\" && cat \"$0.pub\"", filepath.Join(t.TempDir(), "k"))
	if fake.Code != 0 || len(fields) < 3 {
		t.Fatalf("make a second host key: %s (pinned %q)", fake, pinned)
	}
	forged := fields[0] + " " + strings.Join(strings.Fields(fake.Stdout)[:2], " ") + "\n"
	if err := os.WriteFile(knownHosts, []byte(forged), 0o600); err != nil {
		t.Fatal(err)
	}
	r = ssh("true")
	if r.Code == 0 || !strings.Contains(r.Stderr, "host key of the guest at 127.0.0.1:"+strconv.Itoa(h.Port)+" changed (pinned in "+knownHosts+")") {
		t.Errorf("a changed host key was not refused with an explanation: %s", r)
	}
	if err := os.WriteFile(knownHosts, pinned, 0o600); err != nil {
		t.Fatal(err)
	}
	must(ssh("true"), "ssh with the right pin again")
	must(h.Just(ctx, nil, "arm-dev-shutdown"), "final shutdown")
}

// provisionedAsNixOSWould checks the guest after provisioning for what the
// real image would keep if armdev got it wrong: root's empty password, the
// installer's password-less user, its configuration.nix on the disk; and
// that the guest user is declared for this host user.
func provisionedAsNixOSWould(t *testing.T, h *harness.Harness, ssh func(...string) harness.Result) {
	t.Helper()
	if r := ssh("sudo", "grep", "^root:", "/etc/shadow"); r.Code != 0 || !strings.HasPrefix(r.Stdout, "root:!:") {
		t.Errorf("root's shadow entry after provisioning should be locked (root:!:…): %s", r)
	}
	if r := ssh("grep", "^nixos:", "/etc/passwd"); r.Code != 1 {
		t.Errorf("the installer's nixos account survived provisioning: %s", r)
	}
	// The disk under the /etc/nixos mount no longer holds the installer's
	// configuration.nix.
	r := ssh("sudo", "sh", "-c", "mkdir -p /run/armdev-disk && mount -o bind / /run/armdev-disk && ls -A /run/armdev-disk/etc/nixos; s=$?; umount /run/armdev-disk; exit $s")
	if r.Code != 0 || strings.TrimSpace(r.Stdout) != "" {
		t.Errorf("the guest's own /etc/nixos should be empty after provisioning: %s", r)
	}
	id := h.Identity()
	if r := ssh("id", "-u"); strings.TrimSpace(r.Stdout) != strconv.Itoa(id.UID) {
		t.Errorf("the guest user's uid is %q, want %d (%+v)", r.Stdout, id.UID, id)
	}
	if r := ssh("id", "-un"); strings.TrimSpace(r.Stdout) != id.User {
		t.Errorf("logged in as %q, want %s", r.Stdout, id.User)
	}
	if _, err := os.Stat(filepath.Join(h.NixOS, "armdev-local.nix")); err == nil {
		t.Errorf("armdev wrote into the shared configuration folder")
	}
}

// sharedFolder checks /rsonpath both ways: the guest reads what the host
// wrote, edits an existing host file and creates a new one, both of which
// stay the host user's; shared writable mmap works (cache=mmap).
func sharedFolder(t *testing.T, h *harness.Harness, ssh func(...string) harness.Result) {
	t.Helper()
	owner := os.Getuid()
	if owner == 0 {
		owner = h.Identity().UID // QEMU as root stores the guest's uid
	}
	hostNote := fmt.Sprintf("from the host %d\n", time.Now().UnixNano())
	existing := filepath.Join(h.Share, "host-note.txt")
	if err := os.WriteFile(existing, []byte(hostNote), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(existing, owner, -1); err != nil {
		t.Fatal(err)
	}
	if r := ssh("cat", "/rsonpath/host-note.txt"); r.Stdout != hostNote {
		t.Errorf("guest read %q, want %q (%s)", r.Stdout, hostNote, r)
	}
	if r := ssh("sh", "-c", "echo edited in the guest >> /rsonpath/host-note.txt && uname -m > /rsonpath/guest-note.txt"); r.Code != 0 {
		t.Errorf("the guest user cannot write the host user's files: %s", r)
	}
	if data, err := os.ReadFile(existing); err != nil || string(data) != hostNote+"edited in the guest\n" {
		t.Errorf("host reads %q, %v after the guest's edit", data, err)
	}
	if data, err := os.ReadFile(filepath.Join(h.Share, "guest-note.txt")); err != nil || string(data) != "aarch64\n" {
		t.Errorf("host read %q, %v", data, err)
	}
	for _, name := range []string{"host-note.txt", "guest-note.txt"} {
		if uid := fileUID(t, filepath.Join(h.Share, name)); uid != owner {
			t.Errorf("%s belongs to uid %d on the host, want %d", name, uid, owner)
		}
	}
	if r := ssh(testguest.MmapWriteProgram, "/rsonpath/mmap.txt", "written through MAP_SHARED"); r.Code != 0 {
		t.Errorf("shared writable mmap on /rsonpath: %s", r)
	}
	if data, err := os.ReadFile(filepath.Join(h.Share, "mmap.txt")); err != nil || string(data) != "written through MAP_SHARED" {
		t.Errorf("host reads %q, %v from the mmap write", data, err)
	}
}

// updateNeedsTheShare: with /etc/nixos unmounted in the guest, update
// refuses (a switch would apply what the guest's disk holds there), and
// runs again once the share is back.
func updateNeedsTheShare(t *testing.T, ctx context.Context, h *harness.Harness, ssh func(...string) harness.Result) {
	t.Helper()
	if r := ssh("sudo", "umount", "/etc/nixos"); r.Code != 0 {
		t.Fatalf("unmount /etc/nixos in the guest: %s", r)
	}
	before := len(filter(standinCalls(t, ssh), "cmd=nixos-rebuild"))
	r := h.Just(ctx, nil, "arm-dev-update")
	if r.Code == 0 || !strings.Contains(r.Stderr, "/etc/nixos in the guest is not armdev's configuration share") {
		t.Errorf("update without the share: %s", r)
	}
	if after := len(filter(standinCalls(t, ssh), "cmd=nixos-rebuild")); after != before {
		t.Errorf("update without the share ran nixos-rebuild (%d calls, was %d)", after, before)
	}
	if r := ssh("sudo", "mount", "/etc/nixos"); r.Code != 0 {
		t.Fatalf("mount /etc/nixos again: %s", r)
	}
	if r := h.Just(ctx, nil, "arm-dev-update"); r.Code != 0 {
		t.Errorf("update with the share back: %s", r)
	}
}
