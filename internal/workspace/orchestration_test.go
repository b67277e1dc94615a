package workspace

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rsonpath/armdev/internal/guestssh"
	"github.com/rsonpath/armdev/internal/guestssh/sshtest"
	"github.com/rsonpath/armdev/internal/instance"
	"github.com/rsonpath/armdev/internal/qemuvm/qemutest"
	"github.com/rsonpath/armdev/internal/testutil"
)

func TestStartStatusKill(t *testing.T) {
	r := newRig(t, provisionedDisk)
	pid := r.start()
	port := r.env["ARMDEV_SSH_PORT"]
	r.lines("start", "starting the guest (accel ", "the guest is up after ", "SSH on 127.0.0.1:"+port)
	rec, ok, err := r.l().LoadRun()
	if err != nil || !ok || rec.PID != pid || fmt.Sprint(rec.SSHPort) != port || !strings.HasPrefix(rec.Cmdline, r.fake.Path+" -name armdev-guest,process=armdev-guest ") {
		t.Errorf("run record %+v, %v, %v", rec, ok, err)
	}
	if log, _ := os.ReadFile(r.l().QEMULog()); !strings.Contains(string(log), rec.Cmdline+"\n") {
		t.Errorf("qemu.log lacks the command line:\n%s", log)
	}
	if !r.pinned(r.sshd.HostKey()) || r.meta().RepinHostKey {
		t.Errorf("the first contact did not pin the host key for good: pinned %v, repin %v", r.pinned(r.sshd.HostKey()), r.meta().RepinHostKey)
	}
	if cmds := r.ran(); len(cmds) != 0 {
		t.Errorf("start ran %q in the guest; logging in is enough", cmds)
	}

	if err := r.run((*Workspace).Start); err != nil {
		t.Fatal(err)
	}
	r.lines("start again", fmt.Sprintf("the guest is already running (pid %d); SSH on 127.0.0.1:%s", pid, port))

	if err := r.run((*Workspace).Status); err != nil {
		t.Fatal(err)
	}
	r.lines("status", fmt.Sprintf("guest:   running (pid %d)", pid), "ssh:     127.0.0.1:"+port+" as armdev",
		"accel:   "+rec.Accel+", cpu "+rec.CPU, "share:   "+r.root+" at /rsonpath", "disk:    "+r.l().Disk()+": ",
		"image:   NixOS 26.05, Hydra build 7 (nixos-image-sd-card-26.05", "state:   provisioned ", "config:  share/etc/nixos applied",
		"devshell: none (the project has no shell.nix")

	if err := r.run((*Workspace).Kill); err != nil {
		t.Fatal(err)
	}
	r.lines("kill", fmt.Sprintf("killed QEMU (pid %d)", pid))
	r.stopped("kill")
	if err := r.run((*Workspace).Kill); err != nil {
		t.Fatal(err)
	}
	r.lines("kill again", "the guest is not running")
}

func TestStartRefusedKeyIsPrompt(t *testing.T) {
	r := newRig(t, provisionedDisk)
	m := r.meta()
	m.GuestUser = "gone"
	if err := r.l().SaveDisk(m); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	err := r.run((*Workspace).Start)
	if !errors.Is(err, guestssh.ErrAuthRefused) {
		t.Fatalf("start with a key the guest refuses: %v", err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("a refused key took %s to report (ARMDEV_BOOT_TIMEOUT=20s)", took)
	}
	for _, want := range []string{`refused the workspace key for user gone`, `the disk has no user "gone" with this workspace's key`,
		"(the guest keeps running: `just arm-dev-kill` stops it)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if !r.status().Running {
		t.Error("the guest stopped; the message says it keeps running")
	}
}

func TestStartRefusesAChangedHostKey(t *testing.T) {
	r := newRig(t, provisionedDisk)
	first := r.sshd.HostKey()
	r.start()
	if err := r.run((*Workspace).Kill); err != nil {
		t.Fatal(err)
	}
	r.sshd.SetHostKey(sshtest.NewSigner(t)) // someone else on the port, or a disk armdev did not make
	err := r.run((*Workspace).Start)
	want := fmt.Sprintf("host key of the guest at 127.0.0.1:%s changed (pinned in %s)", r.env["ARMDEV_SSH_PORT"], r.l().KnownHosts())
	if !errors.Is(err, guestssh.ErrHostKeyMismatch) || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("start with another host key: %v", err)
	}
	if !r.pinned(first) {
		t.Error("the pin changed")
	}
	if err := r.run((*Workspace).Kill); err != nil {
		t.Fatal(err)
	}
	// After a reset (armdev made the disk anew) the new key is pinned.
	r.env["ARMDEV_YES"] = "1"
	if err := r.run((*Workspace).Reset); err != nil {
		t.Fatal(err)
	}
	r.start()
	if r.pinned(first) || !r.pinned(r.sshd.HostKey()) {
		t.Error("the reset disk's host key was not pinned")
	}
}

func TestProvision(t *testing.T) {
	r := newRig(t, freshDisk)
	r.on("sh "+provisionScript, func(s *sshtest.Session) int {
		fmt.Fprintln(s.Stdout, "building the system configuration...")
		fmt.Fprintln(s.Stderr, "warning: the installer configuration is gone")
		return 0
	})
	if err := r.run((*Workspace).Provision); err != nil {
		t.Fatalf("provision: %v\n%s", err, r.out.String())
	}
	w := r.ws()
	id, identity, err := w.identity(r.meta())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"root: " + uploadIdentity, "root: sh " + provisionScript, "root: poweroff"}
	if got := r.ran(); !slices.Equal(got, want) {
		t.Errorf("the guest ran %q, want %q", got, want)
	}
	if got := r.said(uploadIdentity); !bytes.Equal(got, identity) || !bytes.Contains(got, []byte(r.key.AuthorizedKey)) {
		t.Errorf("uploaded identity %q, want %q", got, identity)
	}
	if kept, _ := os.ReadFile(r.l().Identity()); !bytes.Equal(kept, identity) {
		t.Errorf("the workspace kept %q as the applied identity", kept)
	}
	r.lines("provision", "first boot: provisioning the guest (log: "+r.l().ProvisionLog()+")", "building the system configuration",
		"asking the guest to power off over SSH", "the guest is off", "provisioned: `just arm-dev` starts the guest")
	r.lacks("provision", "power button")
	r.stopped("provision")
	if snaps := r.snapshots(); !slices.Contains(snaps, instance.ProvisionedSnapshot) || !slices.Contains(snaps, instance.FreshSnapshot) {
		t.Errorf("snapshots %q", snaps)
	}
	m := r.meta()
	digest, _ := w.appliedDigest(identity)
	if !m.Provisioned || !m.ProvisionedAt.Equal(rigNow) || m.GuestUser != id.User || m.AppliedConfig != digest || m.RepinHostKey {
		t.Errorf("metadata after provisioning: %+v", m)
	}
	log, _ := os.ReadFile(r.l().ProvisionLog())
	for _, want := range []string{"=== provisioning 2026-06-01T12:00:00Z", "building the system configuration", "warning: the installer configuration is gone"} {
		if !bytes.Contains(log, []byte(want)) {
			t.Errorf("provision log lacks %q:\n%s", want, log)
		}
	}

	if err := r.run((*Workspace).Provision); err != nil {
		t.Fatal(err)
	}
	r.lines("provision again", "the disk is provisioned: `just arm-dev` starts it")
	if n := len(r.ran()); n != len(want) {
		t.Errorf("provisioning a provisioned disk ran %d more commands", n-len(want))
	}
}

func TestProvisionFailingHalfwayThenRetry(t *testing.T) {
	r := newRig(t, freshDisk)
	r.on("sh "+provisionScript, exits(1, "error: builder for '/nix/store/…-system.drv' failed\n"))
	err := r.run((*Workspace).Provision)
	want := "provisioning failed (the provisioning script exited with status 1): see " + r.l().ProvisionLog() +
		"; the disk is kept for inspection, and `just arm-dev-init` tries again from the fresh disk"
	if err == nil || err.Error() != want {
		t.Fatalf("failed provisioning: %v\nwant %s", err, want)
	}
	if got := r.ran(); len(got) != 3 || got[2] != "root: poweroff" {
		t.Errorf("the guest ran %q; it should still be powered off", got)
	}
	r.stopped("failed provisioning")
	if m := r.meta(); m.Provisioned || slices.Contains(r.snapshots(), instance.ProvisionedSnapshot) {
		t.Errorf("a failed attempt counts as provisioned: %+v, snapshots %q", m, r.snapshots())
	}
	log, _ := os.ReadFile(r.l().ProvisionLog())
	if !bytes.Contains(log, []byte("builder for")) || !bytes.Contains(log, []byte("=== failed: the provisioning script exited with status 1")) {
		t.Errorf("provision log:\n%s", log)
	}

	// What the failed attempt changed on the disk and in the guest (new host
	// keys of a first boot) must not matter to the retry: it starts from the
	// fresh disk.
	reverts := r.diskPattern(true, 0xab)
	r.sshd.SetHostKey(sshtest.NewSigner(t))
	r.on("sh "+provisionScript, exits(0, ""))
	if err := r.run((*Workspace).Provision); err != nil {
		t.Fatalf("retry: %v\n%s", err, r.out.String())
	}
	if !r.meta().Provisioned || !r.pinned(r.sshd.HostKey()) {
		t.Errorf("retry: metadata %+v; new host key pinned: %v", r.meta(), r.pinned(r.sshd.HostKey()))
	}
	if reverts {
		r.diskPattern(false, 0) // the fresh disk's zeros, not the failed attempt's 0xab
	}
}

func TestProvisionWithoutRootLogin(t *testing.T) {
	r := newRig(t, freshDisk)
	r.sshd = sshtest.NewServer(t, sshtest.Options{Handler: r.handle}) // knows only armdev
	r.sshd.Authorize("armdev", r.key.Signer.PublicKey())
	r.fake.Set(t, qemutest.Behaviour{SSH: r.sshd.Addr()})
	err := r.run((*Workspace).Provision)
	if !errors.Is(err, guestssh.ErrAuthRefused) || !strings.Contains(err.Error(), "root may log in only on the stock image's first boot") {
		t.Fatalf("provisioning a disk that refuses root: %v", err)
	}
	if err := r.run((*Workspace).Provision); err == nil || !strings.Contains(err.Error(), "the guest is running on the unprovisioned disk") {
		t.Errorf("provisioning while the failed attempt's guest runs: %v", err)
	}
}

func TestProvisionNeedsADisk(t *testing.T) {
	r := newRig(t, freshDisk)
	if err := os.Remove(r.l().DiskMeta()); err != nil {
		t.Fatal(err)
	}
	if err := r.run((*Workspace).Provision); err == nil || !strings.Contains(err.Error(), "has no readable metadata") {
		t.Errorf("provisioning a disk without metadata: %v", err)
	}
	if err := os.Remove(r.l().Disk()); err != nil {
		t.Fatal(err)
	}
	if err := r.run((*Workspace).Provision); err == nil || err.Error() != "there is no working disk: run `just arm-dev-init`" {
		t.Errorf("provisioning without a disk: %v", err)
	}
}

func TestShutdown(t *testing.T) {
	const (
		overSSH  = "asking the guest to power off over SSH"
		notOff   = "the guest did not power off within 1s"
		noSSH    = "SSH unavailable (connect to the guest: ssh to 127.0.0.1:"
		button   = "pressing the power button (QMP system_powerdown)"
		quit     = "asking QEMU to quit (QMP quit)"
		refused  = "QEMU did not quit (QMP quit: quit refused"
		killing  = "killing QEMU"
		off      = "the guest is off"
		poweroff = "armdev: sudo poweroff"
	)
	ignored := func(*sshtest.Session) int { return 0 } // the guest does not go down
	for _, tc := range []struct {
		name     string
		behave   func(r *rig) qemutest.Behaviour // after start
		poweroff reply
		steps    []string
		ran      bool // sudo poweroff ran
	}{
		{name: "poweroff over SSH", ran: true, steps: []string{overSSH, off}},
		{name: "SSH refused, power button", behave: func(*rig) qemutest.Behaviour { return qemutest.Behaviour{} },
			steps: []string{noSSH, button, off}},
		{name: "SSH silent, power button ignored, quit", behave: func(*rig) qemutest.Behaviour {
			return qemutest.Behaviour{HoldSSH: true, IgnorePowerButton: true}
		}, steps: []string{noSSH, button, notOff, quit, off}},
		{name: "poweroff ignored, power button", ran: true, poweroff: ignored, steps: []string{overSSH, notOff, button, off}},
		{name: "everything refused, kill", ran: true, poweroff: ignored, behave: func(r *rig) qemutest.Behaviour {
			return qemutest.Behaviour{SSH: r.sshd.Addr(), IgnorePowerButton: true, RefuseQuit: true}
		}, steps: []string{overSSH, notOff, button, notOff, quit, refused, killing, off}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, provisionedDisk)
			r.start()
			if tc.behave != nil {
				r.fake.Set(t, tc.behave(r))
			}
			if tc.poweroff != nil {
				r.on("sudo poweroff", tc.poweroff)
			}
			if err := r.run((*Workspace).Shutdown); err != nil {
				t.Fatalf("shutdown: %v\n%s", err, r.out.String())
			}
			said := strings.Split(strings.TrimSpace(r.out.String()), "\n")
			if len(said) != len(tc.steps) {
				t.Fatalf("shutdown said:\n%s\nwant %d steps: %q", r.out.String(), len(tc.steps), tc.steps)
			}
			for i, want := range tc.steps {
				if !strings.HasPrefix(said[i], want) {
					t.Errorf("step %d: %q, want %q", i+1, said[i], want)
				}
			}
			if slices.Contains(r.ran(), poweroff) != tc.ran {
				t.Errorf("the guest ran %q", r.ran())
			}
			if slices.Contains(tc.steps, killing) {
				r.stopped("shutdown")
			} else {
				r.stopped("shutdown")
			}
		})
	}
}

func TestShutdownStopped(t *testing.T) {
	r := newRig(t, provisionedDisk)
	if err := r.l().SaveRun(instance.RunRecord{PID: 1, SSHPort: 1}); err != nil {
		t.Fatal(err)
	}
	if err := r.run((*Workspace).Shutdown); err != nil {
		t.Fatal(err)
	}
	r.lines("shutdown", "the guest is not running")
	r.stopped("shutdown of a stopped guest")
}

func TestUpdate(t *testing.T) {
	r := newRig(t, provisionedDisk)
	r.env["ARMDEV_USER"] = "dev"
	r.sshd.Authorize("dev", r.key.Signer.PublicKey())
	r.start()
	upload := "sudo sh -c " + guestssh.Quote([]string{uploadIdentity})

	// Without the configuration share at /etc/nixos, nothing is switched.
	for mounted, want := range map[string]string{"/dev/vda2 ext4\nconfig\n": "(/dev/vda2 ext4)", "\n": "(nothing is mounted there)"} {
		r.on(shareCheck, exits(0, mounted))
		before := len(r.ran())
		err := r.run((*Workspace).Update)
		if err == nil || !strings.HasPrefix(err.Error(), "/etc/nixos in the guest is not armdev's configuration share "+want+": refusing") {
			t.Errorf("update with %q at /etc/nixos: %v", mounted, err)
		}
		if got := r.ran()[before:]; !slices.Equal(got, []string{"armdev: " + shareCheck}) {
			t.Errorf("a refused update ran %q", got)
		}
	}

	// A failing switch records nothing.
	r.on(shareCheck, exits(0, "nixconfig 9p\nconfig\n"))
	r.on("sudo nixos-rebuild switch", exits(1, "error: attribute 'x' missing\n"))
	before := r.meta()
	err := r.run((*Workspace).Update)
	if err == nil || err.Error() != "nixos-rebuild switch exited with status 1: see the output above" {
		t.Errorf("a failing switch: %v", err)
	}
	r.lines("failing switch", "error: attribute 'x' missing")
	if r.meta() != before {
		t.Errorf("a failing switch changed the metadata: %+v", r.meta())
	}

	r.on("sudo nixos-rebuild switch", exits(0, "activating the configuration...\n"))
	n := len(r.ran())
	if err := r.run((*Workspace).Update); err != nil {
		t.Fatalf("update: %v\n%s", err, r.out.String())
	}
	want := []string{"armdev: " + shareCheck, "armdev: " + upload, "armdev: sudo nixos-rebuild switch"}
	if got := r.ran()[n:]; !slices.Equal(got, want) {
		t.Errorf("update ran %q, want %q", got, want)
	}
	uploaded := r.said(upload)
	if !bytes.Contains(uploaded, []byte(`user = "dev";`)) {
		t.Errorf("uploaded identity:\n%s", uploaded)
	}
	if kept, _ := os.ReadFile(r.l().Identity()); !bytes.Equal(kept, uploaded) {
		t.Errorf("kept identity %q, uploaded %q", kept, uploaded)
	}
	digest, _ := r.ws().appliedDigest(uploaded)
	if m := r.meta(); m.GuestUser != "dev" || m.AppliedConfig != digest {
		t.Errorf("metadata after update: %+v", m)
	}
	r.lines("update", "activating the configuration", "configuration applied")

	// From now on armdev logs in as the user the guest has.
	w := r.ws()
	w.In = stdinFile(t, "")
	if code, err := w.SSH(t.Context(), []string{"true"}); err != nil || code != 0 {
		t.Fatalf("ssh after update: %d, %v", code, err)
	}
	if got := r.ran(); !strings.HasPrefix(got[len(got)-1], "dev: ") {
		t.Errorf("after update armdev ran %q", got[len(got)-1])
	}
	if err := r.run((*Workspace).Status); err != nil {
		t.Fatal(err)
	}
	r.lines("status", "config:  share/etc/nixos applied")
}

func TestTidy(t *testing.T) {
	r := newRig(t, provisionedDisk)
	if err := r.run((*Workspace).Tidy); err == nil || err.Error() != "the guest is not running: start it with `just arm-dev`" {
		t.Errorf("tidy of a stopped guest: %v", err)
	}
	r.start()
	if err := r.run((*Workspace).Tidy); err != nil {
		t.Fatal(err)
	}
	r.lines("tidy", "old generations deleted and nix garbage collected")
	if got := r.ran(); !slices.Equal(got, []string{"armdev: " + tidyCommand}) {
		t.Errorf("tidy ran %q", got)
	}
	r.on(tidyCommand, exits(2, "error: cannot delete the current generation\n"))
	if err := r.run((*Workspace).Tidy); err == nil || err.Error() != "tidy exited with status 2" {
		t.Errorf("failing tidy: %v", err)
	}
}

// stdinFile is a file holding content, to be a workspace's In.
func stdinFile(t *testing.T, content string) *os.File {
	t.Helper()
	path := t.TempDir() + "/stdin"
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestSSH(t *testing.T) {
	r := newRig(t, provisionedDisk)
	var stdout, stderr bytes.Buffer
	ssh := func(in string, args ...string) int {
		t.Helper()
		stdout.Reset()
		stderr.Reset()
		w := r.ws()
		w.In, w.Out, w.Err = stdinFile(t, in), &stdout, &stderr
		code, err := w.SSH(t.Context(), args)
		if err != nil {
			t.Fatalf("ssh %q: %v", args, err)
		}
		return code
	}
	last := func() string {
		got := r.ran()
		return got[len(got)-1]
	}
	if _, err := r.ws().SSH(t.Context(), []string{"true"}); err == nil || err.Error() != "the guest is not running: start it with `just arm-dev`" {
		t.Errorf("ssh to a stopped guest: %v", err)
	}
	r.start()

	if code := ssh("", "sh", "-c", "echo out; echo err >&2; exit 7"); code != 7 || stdout.String() != "out\n" || stderr.String() != "err\n" {
		t.Errorf("exit status %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
	if code := ssh("", "printf", "%s|", "a  b", "c'd", "", "$HOME"); code != 0 || stdout.String() != "a  b|c'd||$HOME|" {
		t.Errorf("quoting: %d, %q", code, stdout.String())
	}
	if code := ssh("line 1\nline 2\n", "cat"); code != 0 || stdout.String() != "line 1\nline 2\n" {
		t.Errorf("stdin: %d, %q", code, stdout.String())
	}
	if got := last(); got != "armdev: cd /rsonpath 2>/dev/null; cat" {
		t.Errorf("without a dev shell the command is %q", got)
	}

	// With a dev shell: the command string devshell makes, as the guest user.
	r.write("shell.nix", "{ pkgs ? import <nixpkgs> { } }: pkgs.mkShell { }\n")
	spec, err := r.ws().devShell()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"cargo", "test", "--", "a b"}
	r.on(spec.Command(args), exits(0, "test result: ok\n"))
	if code := ssh("", args...); code != 0 || stdout.String() != "test result: ok\n" {
		t.Errorf("in the dev shell: %d, %q (ran %q)", code, stdout.String(), last())
	}
	r.env["ARMDEV_NIX_SHELL"] = "0"
	ssh("", "true")
	if got := last(); got != "armdev: cd /rsonpath 2>/dev/null; true" {
		t.Errorf("with ARMDEV_NIX_SHELL=0 the command is %q", got)
	}
	delete(r.env, "ARMDEV_NIX_SHELL")

	// No arguments: the dev shell's interactive session, on a PTY.
	sessions := make(chan sshtest.Session, 1)
	r.on(spec.Shell(), func(s *sshtest.Session) int { sessions <- *s; return 3 })
	t.Setenv("TERM", "")
	if code := ssh(""); code != 3 {
		t.Errorf("interactive shell: exit %d", code)
	}
	if s := <-sessions; !s.PTY || s.Term != "xterm-256color" || s.User != "armdev" {
		t.Errorf("interactive shell: PTY %v, TERM %q, user %q", s.PTY, s.Term, s.User)
	}
}

func TestShellRefresh(t *testing.T) {
	r := newRig(t, provisionedDisk)
	if err := r.run((*Workspace).ShellRefresh); err != nil {
		t.Fatal(err)
	}
	r.lines("refresh without a dev shell", "nothing to refresh")
	r.write("flake.nix", "{ outputs = { self }: { devShells = { }; }; }\n")
	spec, err := r.ws().devShell()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.run((*Workspace).ShellRefresh); err == nil || err.Error() != "the guest is not running: start it with `just arm-dev`" {
		t.Errorf("refresh with the guest stopped: %v", err)
	}
	r.start()
	r.on(spec.RefreshCommand(), exits(0, ""))
	if err := r.run((*Workspace).ShellRefresh); err != nil {
		t.Fatal(err)
	}
	r.lines("refresh", "the dev shell is evaluated and cached")
	r.on(spec.RefreshCommand(), exits(1, ""))
	if err := r.run((*Workspace).ShellRefresh); err == nil || err.Error() != "refresh the dev shell exited with status 1" {
		t.Errorf("failing refresh: %v", err)
	}
}

func TestReset(t *testing.T) {
	r := newRig(t, provisionedDisk)
	reverts := r.diskPattern(true, 0xcd) // the guest's work since provisioning
	pid := r.start()
	m := r.meta()
	if m.RepinHostKey {
		t.Fatal("the first start left the host key unpinned")
	}
	err := r.run((*Workspace).Reset)
	if err == nil || err.Error() != "reset needs a yes: answer y on a terminal or set ARMDEV_YES=1" {
		t.Errorf("reset without a yes: %v", err)
	}
	if !r.status().Running {
		t.Error("a refused reset stopped the guest")
	}
	r.env["ARMDEV_YES"] = "1"
	if err := r.run((*Workspace).Reset); err != nil {
		t.Fatal(err)
	}
	r.lines("reset", "stopping the guest first", fmt.Sprintf("killed QEMU (pid %d)", pid),
		"reset to the state provisioned on "+m.ProvisionedAt.Local().Format(time.DateTime)+": discarded every change")
	r.stopped("reset")
	if !r.meta().RepinHostKey {
		t.Error("after a reset the guest's new host key must be accepted once")
	}
	if reverts {
		r.diskPattern(false, 0)
	}
}

func TestResetNeedsAProvisionedDisk(t *testing.T) {
	r := newRig(t, freshDisk)
	r.env["ARMDEV_YES"] = "1"
	err := r.run((*Workspace).Reset)
	if err == nil || err.Error() != "nothing to reset to: there is no provisioned disk yet: run `just arm-dev-init` first" {
		t.Errorf("reset of an unprovisioned disk: %v", err)
	}
}

func TestKillFindsTheGuestWithoutItsPIDFile(t *testing.T) {
	r := newRig(t, provisionedDisk)
	pid := r.start()
	if err := os.Remove(r.l().PIDFile()); err != nil {
		t.Fatal(err)
	}
	if err := r.run((*Workspace).Status); err != nil {
		t.Fatal(err)
	}
	r.lines("status", fmt.Sprintf("guest:   running (pid %d, found by its name and disk", pid))
	if err := r.run((*Workspace).Kill); err != nil {
		t.Fatal(err)
	}
	r.lines("kill", fmt.Sprintf("killed QEMU (pid %d, found by its name and disk: the pid file was missing or stale)", pid))
	r.stopped("kill")
}

func TestKillLeavesWhatAStalePIDFileNames(t *testing.T) {
	r := newRig(t, provisionedDisk)
	// The pid file names this test: a live process that is not the guest.
	if err := os.MkdirAll(r.l().RunDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.l().PIDFile(), fmt.Appendf(nil, "%d\n", os.Getpid()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.run((*Workspace).Status); err != nil {
		t.Fatal(err)
	}
	r.lines("status", "guest:   stopped", "note:    a stale pid file (process ")
	if err := r.run((*Workspace).Kill); err != nil {
		t.Fatal(err)
	}
	r.lines("kill", "the guest is not running", "removed a stale pid file (process ", "); killed nothing else")
	r.stopped("kill with a stale pid file")
}

func TestStatus(t *testing.T) {
	r := newRig(t, freshDisk)
	if err := r.run((*Workspace).Status); err != nil {
		t.Fatal(err)
	}
	r.lines("unprovisioned", "guest:   stopped", "ssh:     127.0.0.1:"+r.env["ARMDEV_SSH_PORT"]+" when running",
		"image:   NixOS 26.05, Hydra build 7", "state:   not provisioned yet (`just arm-dev-init`)")

	if err := os.Remove(r.l().DiskMeta()); err != nil {
		t.Fatal(err)
	}
	if err := r.run((*Workspace).Status); err != nil {
		t.Fatal(err)
	}
	r.lines("unknown disk", "disk:    "+r.l().Disk()+", metadata unreadable (")

	if err := os.Remove(r.l().Disk()); err != nil {
		t.Fatal(err)
	}
	if err := r.run((*Workspace).Status); err != nil {
		t.Fatal(err)
	}
	r.lines("no disk", "disk:    none yet (`just arm-dev-init`)")
}

func TestStatusConfigAndDevShell(t *testing.T) {
	r := newRig(t, provisionedDisk)
	// An edit after the digest newRig recorded: the stamp trusts mtimes, and
	// within one tick of the file system's clock an edit would not be newer.
	edited := r.write("share/etc/nixos/configuration.nix", "{ ... }: { networking.hostName = \"x\"; }\n")
	later := time.Now().Add(time.Second)
	if err := os.Chtimes(edited, later, later); err != nil {
		t.Fatal(err)
	}
	r.write("shell.nix", "{ pkgs ? import <nixpkgs> { } }: pkgs.mkShell { }\n")
	if err := r.run((*Workspace).Status); err != nil {
		t.Fatal(err)
	}
	r.lines("stopped", "config:  share/etc/nixos or the workspace's identity changed since it was last applied: run `just arm-dev-update`",
		"devshell: shell.nix (key ", "(whether it is cached shows while the guest runs)")

	r.start()
	spec, err := r.ws().devShell()
	if err != nil {
		t.Fatal(err)
	}
	r.on(spec.StatusCommand(), exits(0, "current\n"))
	if err := r.run((*Workspace).Status); err != nil {
		t.Fatal(err)
	}
	r.lines("running", "devshell: shell.nix (key ", "cached and current")
	if got := r.ran(); !slices.Equal(got, []string{"armdev: " + spec.StatusCommand()}) {
		t.Errorf("status ran %q", got)
	}
	r.env["ARMDEV_NIX_SHELL"] = "0"
	if err := r.run((*Workspace).Status); err != nil {
		t.Fatal(err)
	}
	r.lines("ARMDEV_NIX_SHELL=0", "devshell: off (ARMDEV_NIX_SHELL=0)")
}

func TestSSHConfig(t *testing.T) {
	r := newRig(t, provisionedDisk)
	r.start()
	// The port the running guest was started with, not today's setting.
	port := r.env["ARMDEV_SSH_PORT"]
	r.env["ARMDEV_SSH_PORT"] = fmt.Sprint(testutil.Port(t))
	if err := r.run((*Workspace).SSHConfig); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(r.l().SSHConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Host armdev", "Port " + port, "User armdev", r.key.PrivatePath, r.l().KnownHosts()} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("ssh config lacks %q:\n%s", want, cfg)
		}
	}
	r.lines("sshconfig", "wrote "+r.l().SSHConfig(), "ssh -F", "scp -F", "rsync -e", "Include "+r.l().SSHConfig())
}

func TestConsole(t *testing.T) {
	r := newRig(t, provisionedDisk)
	if err := r.run((*Workspace).Console); err == nil || err.Error() != "the guest is not running: start it with `just arm-dev`" {
		t.Errorf("console of a stopped guest: %v", err)
	}
	r.start()
	w := r.ws()
	w.In = stdinFile(t, "root\r\x1dnever sent")
	r.out.Reset()
	if err := w.Console(t.Context()); err != nil {
		t.Fatal(err)
	}
	r.lines("console", "Connected to the guest console; press Ctrl-] to detach.", "Detached; the guest keeps running.")
	// The guest got the keys before Ctrl-], and nothing after.
	deadline := time.Now().Add(10 * time.Second)
	for {
		log, _ := os.ReadFile(r.l().SerialLog())
		if bytes.Contains(log, []byte("root\r")) {
			if bytes.Contains(log, []byte("never")) {
				t.Errorf("the console sent what followed Ctrl-]:\n%q", log)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest never got the keys:\n%q", log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !r.status().Running {
		t.Error("detaching stopped the guest")
	}
}

// TestSocketsOfADeepStateFolder checks that a state folder too deep for
// unix sockets still runs: the sockets go to a short private folder and the
// run record says where, for shutdown's QMP.
func TestSocketsOfADeepStateFolder(t *testing.T) {
	r := newRig(t, provisionedDisk)
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	deep := r.root + "/" + strings.Repeat("d", 100)
	if err := os.Rename(r.l().Dir, deep); err != nil {
		t.Fatal(err)
	}
	r.env["ARMDEV_STATE_DIR"] = deep
	r.start()
	rec, _, _ := r.l().LoadRun()
	if strings.HasPrefix(rec.QMP, deep) || !strings.HasPrefix(rec.QMP, os.Getenv("XDG_RUNTIME_DIR")) {
		t.Errorf("QMP socket %q", rec.QMP)
	}
	r.fake.Set(t, qemutest.Behaviour{}) // no SSH: the power button it is
	if err := r.run((*Workspace).Shutdown); err != nil {
		t.Fatal(err)
	}
	r.lines("shutdown", "pressing the power button", "the guest is off")
	r.stopped("shutdown")
}

// Issue 9 §10: when the one-time permission to pin a new host key cannot be
// cleared after the first contact, the command says so instead of leaving
// the next forged key welcome.
func TestFailedRepinClearIsReported(t *testing.T) {
	if os.Getuid() == 0 {
		t.Skip("root writes into a read-only folder anyway")
	}
	r := newRig(t, provisionedDisk)
	r.start()
	if err := r.run((*Workspace).Shutdown); err != nil {
		t.Fatal(err)
	}
	// Start again with the permission set (as after reset), but unable to
	// save the metadata that clears it.
	m := r.meta()
	m.RepinHostKey = true
	if err := r.l().SaveDisk(m); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(r.l().Dir, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(r.l().Dir, 0o755) })
	err := r.run((*Workspace).Start)
	if err == nil || !strings.Contains(err.Error(), "record the pinned host key: ") {
		t.Errorf("start with an unsavable repin flag: %v", err)
	}
	if err := os.Chmod(r.l().Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if !r.meta().RepinHostKey {
		t.Fatal("the flag should still be set: it could not be saved")
	}
}
