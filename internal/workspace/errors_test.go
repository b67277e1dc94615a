package workspace

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rsonpath/armdev/internal/fakehydra"
	"github.com/rsonpath/armdev/internal/guestssh/sshtest"
	"github.com/rsonpath/armdev/internal/instance"
	"github.com/rsonpath/armdev/internal/qemuvm/qemutest"
	"github.com/rsonpath/armdev/internal/testutil"
)

// words are a segment's words for comparison: lower case, without quotes,
// brackets and articles.
func words(segment string) []string {
	var ws []string
	for _, w := range strings.Fields(strings.ToLower(segment)) {
		w = strings.Trim(w, "\"'`()[],;")
		if w != "" && w != "the" && w != "a" && w != "an" {
			ws = append(ws, w)
		}
	}
	return ws
}

// repeated returns what an error message says twice on its way up, or "".
// Its first line is split at ": " into segments, each added by a caller or
// said by the callee at the bottom; an operation is named twice when a
// segment comes back, or when a short segment (up to three words: an
// operation or a thing, as callers prefix) is followed by one whose first
// two words hold its first or last word: "provision: start guest: start guest",
// "kill: kill guest", "workspace key: ssh key", "download image: download
// of …".
func repeated(msg string) string {
	line, _, _ := strings.Cut(msg, "\n")
	segs := strings.Split(line, ": ")
	seen := map[string]bool{}
	for i, s := range segs {
		ws := words(s)
		key := strings.Join(ws, " ")
		if seen[key] && key != "" {
			return s
		}
		seen[key] = true
		if i+1 == len(segs) || len(ws) == 0 || len(ws) > 3 {
			continue
		}
		next := words(segs[i+1])
		for _, w := range next[:min(2, len(next))] {
			if w == ws[0] || w == ws[len(ws)-1] {
				return s + ": " + segs[i+1]
			}
		}
	}
	return ""
}

func TestRepeatedFindsOperationsNamedTwice(t *testing.T) {
	for msg, want := range map[string]string{
		"provision: start guest: start guest: QEMU exited: boom":                                               "start guest: start guest",
		"kill: kill guest: no such process":                                                                    "kill: kill guest",
		"workspace key: ssh key: mkdir /x: permission denied":                                                  "workspace key: ssh key",
		"workspace key: ssh key /x is accessible by others (mode 0644)":                                        "workspace key: ssh key /x is accessible by others (mode 0644)",
		"download image: download of x.img.zst: deleted; run again":                                            "download image: download of x.img.zst",
		"ssh config: write ssh config: open /x: permission denied":                                             "ssh config: write ssh config",
		"write ssh config: write /x/config: rename /x/.c /x/config: file exists":                               "write ssh config: write /x/config",
		"start the guest: QEMU exited: -drive x: Could not open 'x'":                                           "",
		"kill the guest: look for the guest among processes: open /proc":                                       "",
		"connect to the guest: ssh to 127.0.0.1:5022: tcp connect: refused":                                    "",
		"the guest stopped before SSH answered: guest at 127.0.0.1:1 not ready over SSH\nlast lines: guest at": "",
	} {
		if got := repeated(msg); got != want {
			t.Errorf("repeated(%q) = %q, want %q", msg, got, want)
		}
	}
}

// TestErrorsNameTheirOperationOnce drives the main failure paths of the
// targets and checks that each error is what the user should read (one line
// unless it quotes a log) and names no operation twice: the callee says
// what failed, each caller adds only what it was doing (issue 10).
func TestErrorsNameTheirOperationOnce(t *testing.T) {
	start, provision, reset := (*Workspace).Start, (*Workspace).Provision, (*Workspace).Reset
	for _, tc := range []struct {
		name  string
		state int
		setup func(t *testing.T, r *rig)
		run   func(*Workspace, context.Context) error
		want  string // the message contains it
		lines bool   // the message may quote a log on more lines
		// elsewhere is a repeat made below this package, to be fixed there:
		// the test skips, naming it, while it is there.
		elsewhere string
	}{
		{name: "QEMU exits at start", state: provisionedDisk, run: start,
			setup: func(t *testing.T, r *rig) {
				r.fake.Set(t, qemutest.Behaviour{FailStart: "-machine virt: unsupported machine type"})
			},
			want: "start the guest: QEMU exited: -machine virt: unsupported machine type"},
		{name: "QEMU exits at the first boot", state: freshDisk, run: provision,
			setup: func(t *testing.T, r *rig) {
				r.fake.Set(t, qemutest.Behaviour{FailStart: "-machine virt: unsupported machine type"})
			},
			want: "start the guest: QEMU exited: -machine virt: unsupported machine type"},
		{name: "QEMU cannot be probed", state: provisionedDisk, run: start,
			setup: func(t *testing.T, r *rig) {
				r.hv.probeErr = errors.New("probe QEMU: qemu-system-aarch64 --version: exit status 1")
			},
			want: "probe QEMU: "},
		{name: "the disk is another QEMU's", state: provisionedDisk, run: start,
			setup: func(t *testing.T, r *rig) {
				spec := r.fake.Spec(t)
				spec.Disk, spec.Name = r.l().Disk(), "another-guest"
				qemutest.Start(t, spec)
			},
			want: "start the guest: the disk " + "%DISK%" + " is in use by another QEMU: stop that guest first"},
		{name: "SSH port taken", state: provisionedDisk, run: start,
			setup: func(t *testing.T, r *rig) {
				l, err := net.Listen("tcp", "127.0.0.1:"+r.env["ARMDEV_SSH_PORT"])
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
			},
			want: "SSH port %PORT% on 127.0.0.1 is in use: set ARMDEV_SSH_PORT to a free port"},
		{name: "QEMU missing", state: provisionedDisk, run: start,
			setup: func(t *testing.T, r *rig) { r.env["ARMDEV_QEMU"] = "qemu-system-aarch64-missing" },
			want:  "qemu-system-aarch64-missing was not found on PATH: install qemu-system-aarch64"},
		{name: "qemu-img missing", state: provisionedDisk, run: reset,
			setup: func(t *testing.T, r *rig) { r.env["ARMDEV_QEMU_IMG"] = "qemu-img-missing" },
			want:  "qemu-img-missing was not found on PATH: install qemu-img"},
		{name: "qemu-img fails", state: provisionedDisk, run: reset,
			setup: func(t *testing.T, r *rig) {
				r.env["ARMDEV_YES"] = "1"
				r.qemuImg("snapshot", "-d", instance.ProvisionedSnapshot, r.l().Disk())
			},
			want: `revert %DISK% to snapshot "provisioned": qemu-img snapshot: exit status 1: `},
		{name: "qemu-img fails at the first boot", state: freshDisk, run: provision,
			setup: func(t *testing.T, r *rig) {
				r.env["ARMDEV_QEMU_IMG"] = r.write("bin/qemu-img", "#!/bin/sh\necho 'qemu-img: simulated failure' >&2\nexit 1\n")
				if err := os.Chmod(r.env["ARMDEV_QEMU_IMG"], 0o755); err != nil {
					t.Fatal(err)
				}
			},
			want: "inspect %DISK%: qemu-img info: exit status 1: qemu-img: simulated failure"},
		{name: "SSH key refused", state: provisionedDisk, run: start,
			setup: func(t *testing.T, r *rig) { m := r.meta(); m.GuestUser = "gone"; _ = r.l().SaveDisk(m) },
			want:  `the guest at 127.0.0.1:%PORT% refused the workspace key for user gone for `},
		{name: "root login refused", state: freshDisk, run: provision,
			setup: func(t *testing.T, r *rig) {
				r.sshd = sshtest.NewServer(t, sshtest.Options{Handler: r.handle})
				r.fake.Set(t, qemutest.Behaviour{SSH: r.sshd.Addr()})
			},
			want: "root may log in only on the stock image's first boot"},
		{name: "host key changed", state: provisionedDisk, run: start,
			setup: func(t *testing.T, r *rig) {
				r.start()
				if err := r.run((*Workspace).Kill); err != nil {
					t.Fatal(err)
				}
				r.sshd.SetHostKey(sshtest.NewSigner(t))
			},
			want: "host key of the guest at 127.0.0.1:%PORT% changed"},
		{name: "the guest stops before SSH answers", state: provisionedDisk, run: start, lines: true,
			setup: func(t *testing.T, r *rig) {
				r.env["ARMDEV_BOOT_TIMEOUT"] = "1s"
				r.fake.Set(t, qemutest.Behaviour{HaltAtSSH: true})
			},
			want: "the guest stopped before SSH answered: guest at 127.0.0.1:%PORT% not ready over SSH after "},
		{name: "SSH never answers", state: provisionedDisk, run: start, lines: true,
			setup: func(t *testing.T, r *rig) {
				r.env["ARMDEV_BOOT_TIMEOUT"] = "1s"
				r.fake.Set(t, qemutest.Behaviour{HoldSSH: true})
			},
			want: "(ARMDEV_BOOT_TIMEOUT=1s); the guest is still running (`just arm-dev-console` to look, `just arm-dev-kill` to stop)"},
		{name: "provisioning script fails", state: freshDisk, run: provision,
			setup: func(t *testing.T, r *rig) { r.on("sh "+provisionScript, exits(1, "")) },
			want:  "provisioning failed (the provisioning script exited with status 1): see %LOG%"},
		{name: "identity upload fails", state: freshDisk, run: provision,
			setup: func(t *testing.T, r *rig) { r.on(uploadIdentity, exits(1, "")) },
			want:  "provisioning failed (upload the identity exited with status 1): see %LOG%"},
		{name: "key file readable by others", state: provisionedDisk, run: start,
			setup: func(t *testing.T, r *rig) { _ = os.Chmod(r.key.PrivatePath, 0o644) },
			want:  "ssh key %KEY% is accessible by others (mode 0644): run chmod 600 %KEY%"},
		{name: "ssh config unwritable", state: provisionedDisk, run: (*Workspace).SSHConfig,
			setup: func(t *testing.T, r *rig) {
				if err := os.Mkdir(r.l().SSHConfig(), 0o755); err != nil { // a folder where the file goes
					t.Fatal(err)
				}
			},
			want: "write %CONFIG%: "},
		{name: "Hydra unreachable", state: freshDisk, run: (*Workspace).Image,
			setup: func(t *testing.T, r *rig) {
				r.env["ARMDEV_HYDRA_URL"] = fmt.Sprintf("http://127.0.0.1:%d", testutil.Port(t))
			},
			want: "resolve release 26.05: "},
		{name: "download fails its check", state: freshDisk, run: (*Workspace).Image,
			setup: func(t *testing.T, r *rig) {
				h := fakehydra.NewServer()
				t.Cleanup(h.Close)
				h.AddBuild("26.05", "nixos-image-sd-card-26.05-aarch64-linux.img.zst", []byte("not an image"))
				h.SetOptions(fakehydra.Options{WrongSHA: true})
				r.env["ARMDEV_HYDRA_URL"] = h.URL()
			},
			want: "download of nixos-image-sd-card-26.05-aarch64-linux.img.zst: "},
		{name: "update without the configuration share", state: provisionedDisk, run: (*Workspace).Update,
			setup: func(t *testing.T, r *rig) { r.start(); r.on(shareCheck, exits(0, "\n")) },
			want:  "/etc/nixos in the guest is not armdev's configuration share (nothing is mounted there)"},
		{name: "switch fails", state: provisionedDisk, run: (*Workspace).Update,
			setup: func(t *testing.T, r *rig) { r.start(); r.on("sudo nixos-rebuild switch", exits(1, "")) },
			want:  "nixos-rebuild switch exited with status 1: see the output above"},
		{name: "tidy fails", state: provisionedDisk, run: (*Workspace).Tidy,
			setup: func(t *testing.T, r *rig) { r.start(); r.on(tidyCommand, exits(1, "")) },
			want:  "tidy exited with status 1"},
		{name: "guest not running", state: provisionedDisk, run: (*Workspace).Tidy,
			want: "the guest is not running: start it with `just arm-dev`"},
		{name: "guest not provisioned", state: freshDisk, run: start,
			want: "there is no provisioned disk yet: run `just arm-dev-init` first"},
		{name: "console of a stopped guest", state: provisionedDisk, run: (*Workspace).Console,
			want: "the guest is not running: start it with `just arm-dev`"},
		{name: "lock busy", state: provisionedDisk, run: (*Workspace).Kill,
			setup: func(t *testing.T, r *rig) { r.holdLock(t) },
			want:  fmt.Sprintf("another armdev is working in this workspace (pid %d: test): wait for it to finish", os.Getpid())},
		{name: "lock busy until the deadline", state: provisionedDisk,
			run: func(w *Workspace, ctx context.Context) error {
				ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
				defer cancel()
				return w.Start(ctx)
			},
			setup: func(t *testing.T, r *rig) { r.holdLock(t) },
			want:  fmt.Sprintf("gave up waiting for another armdev in this workspace (pid %d: test): context deadline exceeded", os.Getpid())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, tc.state)
			if tc.setup != nil {
				tc.setup(t, r)
			}
			err := r.run(tc.run)
			if err == nil {
				t.Fatalf("no error\n%s%s", r.out.String(), r.errs.String())
			}
			msg := err.Error()
			want := strings.NewReplacer("%DISK%", r.l().Disk(), "%PORT%", r.env["ARMDEV_SSH_PORT"],
				"%LOG%", r.l().ProvisionLog(), "%KEY%", r.key.PrivatePath, "%CONFIG%", r.l().SSHConfig()).Replace(tc.want)
			if !strings.Contains(msg, want) {
				t.Errorf("error %q\nlacks %q", msg, want)
			}
			if !tc.lines && strings.Contains(msg, "\n") {
				t.Errorf("error is more than one line:\n%s", msg)
			}
			twice := repeated(msg)
			switch {
			case twice != "" && tc.elsewhere != "":
				t.Skipf("error names an operation twice (%q) in a package below: %s", twice, tc.elsewhere)
			case twice != "":
				t.Errorf("error names an operation twice (%q):\n%s", twice, msg)
			case tc.elsewhere != "":
				t.Errorf("the repeat of %s is fixed: drop elsewhere", tc.elsewhere)
			}
		})
	}
}

// holdLock takes the workspace lock as another armdev running "test" would,
// until the test ends.
func (r *rig) holdLock(t *testing.T) {
	t.Helper()
	lk, err := r.l().Acquire(t.Context(), "test", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lk.Release() })
}
