package workspace

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rsonpath/armdev/internal/config"
	"github.com/rsonpath/armdev/internal/disk"
	"github.com/rsonpath/armdev/internal/guestssh"
	"github.com/rsonpath/armdev/internal/guestssh/sshtest"
	"github.com/rsonpath/armdev/internal/instance"
	"github.com/rsonpath/armdev/internal/qemuvm"
	"github.com/rsonpath/armdev/internal/qemuvm/qemutest"
	"github.com/rsonpath/armdev/internal/testutil"
)

// The orchestration tests run the workspace's targets for real against a
// fake QEMU (qemutest: a process with QEMU's pid file, locks, QMP, serial
// socket and SSH forward) whose forward leads to an in-process sshd
// (sshtest) playing the guest, on a disk made by the real qemu-img.

// testHypervisor is the real one running the fake QEMU, with fixed caps:
// what the QEMU binary supports is not the orchestration's business.
type testHypervisor struct {
	qemu
	probeErr error
}

func (h testHypervisor) Probe(context.Context, string) (qemuvm.Caps, error) {
	return qemuvm.Caps{Version: "7.2.0", PauthImpdef: true}, h.probeErr
}

// rigNow is the workspace's clock in the rig.
var rigNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// reply is how the guest answers one command.
type reply func(s *sshtest.Session) int

// rig is one workspace with a fake QEMU and a scripted guest.
type rig struct {
	t    *testing.T
	root string // the armdev checkout, which is also the shared project
	env  map[string]string
	// out and errs are the workspace's Out and Err: two buffers, since a
	// remote command's stdout and stderr are copied at the same time.
	out, errs bytes.Buffer
	fake      *qemutest.Fake
	sshd      *sshtest.Server
	key       guestssh.Key
	hv        testHypervisor

	mu      sync.Mutex
	replies map[string]reply
	stdin   map[string][]byte // what each command read, when its reply reads
}

// disk states newRig can start from.
const (
	freshDisk       = iota // made by image: a "fresh" snapshot, not provisioned
	provisionedDisk        // and provisioned: a "provisioned" snapshot too
)

// newRig makes a workspace whose guest's sshd accepts the workspace key for
// root and armdev, on a disk in state.
func newRig(t *testing.T, state int) *rig {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not available")
	}
	r := &rig{t: t, root: t.TempDir(), replies: map[string]reply{}, stdin: map[string][]byte{}}
	r.write("share/etc/nixos/configuration.nix", "{ ... }: { }\n")
	r.write("init/root/armdev-provision.sh", "#!/bin/sh\n")
	r.sshd = sshtest.NewServer(t, sshtest.Options{Handler: r.handle})
	r.fake = qemutest.New(t, qemutest.Behaviour{SSH: r.sshd.Addr()})
	r.env = map[string]string{
		"ARMDEV_QEMU": r.fake.Path, "ARMDEV_QEMU_IMG": "qemu-img", "ARMDEV_UBOOT": r.write("u-boot.bin", "u-boot"),
		"ARMDEV_SSH_PORT": fmt.Sprint(testutil.Port(t)), "ARMDEV_CPUS": "1", "ARMDEV_MEMORY": "256M",
		"ARMDEV_BOOT_TIMEOUT": "20s", "ARMDEV_SHUTDOWN_TIMEOUT": "1s",
	}
	w := r.ws()
	key, err := guestssh.EnsureKey(w.l.SSHDir())
	if err != nil {
		t.Fatal(err)
	}
	r.key = key
	r.sshd.Authorize("root", key.Signer.PublicKey())
	r.sshd.Authorize("armdev", key.Signer.PublicKey())

	r.qemuImg("create", "-q", "-f", "qcow2", w.l.Disk(), "64M")
	r.qemuImg("snapshot", "-c", instance.FreshSnapshot, w.l.Disk())
	m := instance.DiskMeta{
		BaseKey: "0123456789abcdef0123", Base: w.l.Base("0123456789abcdef0123"), Release: "26.05", BuildID: 7,
		Image: "nixos-image-sd-card-26.05.20260601.abcdef0-aarch64-linux.img.zst", Created: rigNow.Add(-time.Hour),
		RepinHostKey: true,
	}
	if state == provisionedDisk {
		r.qemuImg("snapshot", "-c", instance.ProvisionedSnapshot, w.l.Disk())
		m.Provisioned, m.ProvisionedAt, m.GuestUser = true, rigNow.Add(-time.Minute), "armdev"
		_, identity, err := w.identity(m)
		if err != nil {
			t.Fatal(err)
		}
		if m.AppliedConfig, err = w.appliedDigest(identity); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.l.SaveDisk(m); err != nil {
		t.Fatal(err)
	}
	return r
}

// write puts content at rel in the checkout.
func (r *rig) write(rel, content string) string {
	r.t.Helper()
	path := filepath.Join(r.root, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		r.t.Fatal(err)
	}
	return path
}

// ws opens the workspace as a target does, with the rig's clock, host
// user, fake QEMU and a short grace for a refused key.
func (r *rig) ws() *Workspace {
	r.t.Helper()
	cfg, err := config.Load(r.root, func(k string) (string, bool) { v, ok := r.env[k]; return v, ok })
	if err != nil {
		r.t.Fatal(err)
	}
	w := New(cfg)
	w.In, w.Out, w.Err = nil, &r.out, &r.errs
	w.Now = func() time.Time { return rigNow }
	w.hv = r.hv
	w.hostID = func() (int, int) { return 1000, 100 }
	w.authGrace = 300 * time.Millisecond
	return w
}

// l is the workspace's layout.
func (r *rig) l() instance.Layout { return r.ws().l }

func (r *rig) qemuImg(args ...string) {
	r.t.Helper()
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		r.t.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// run runs a target with a fresh output and returns its error.
func (r *rig) run(target func(*Workspace, context.Context) error) error {
	r.t.Helper()
	r.out.Reset()
	r.errs.Reset()
	return target(r.ws(), r.t.Context())
}

// start starts the guest and returns its pid.
func (r *rig) start() int {
	r.t.Helper()
	if err := r.run((*Workspace).Start); err != nil {
		r.t.Fatalf("start: %v\n%s", err, r.out.String())
	}
	return r.status().PID
}

// status is what the workspace knows about its QEMU.
func (r *rig) status() qemuvm.State {
	r.t.Helper()
	st, err := r.ws().vm().Status()
	if err != nil {
		r.t.Fatal(err)
	}
	return st
}

// meta is the working disk's metadata.
func (r *rig) meta() instance.DiskMeta {
	r.t.Helper()
	wd, err := r.l().LoadDisk()
	if err != nil || wd.State != instance.KnownDisk {
		r.t.Fatalf("disk metadata: %+v, %v", wd, err)
	}
	return wd.Meta
}

// snapshots lists the working disk's snapshots.
func (r *rig) snapshots() []string {
	r.t.Helper()
	info, err := disk.ImageInfo(r.t.Context(), "qemu-img", r.l().Disk())
	if err != nil {
		r.t.Fatal(err)
	}
	return info.Snapshots
}

// on makes the guest answer cmd with rep.
func (r *rig) on(cmd string, rep reply) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.replies[cmd] = rep
}

// said returns what the guest received on stdin for cmd.
func (r *rig) said(cmd string) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stdin[cmd]
}

// ran lists the commands the guest ran, as "user: command".
func (r *rig) ran() []string {
	var cmds []string
	for _, rec := range r.sshd.Commands() {
		cmds = append(cmds, rec.User+": "+rec.Command)
	}
	return cmds
}

// handle is the guest's sshd: a scripted reply for the commands armdev
// runs, the host's sh (in a folder of its own) for anything else.
func (r *rig) handle(s *sshtest.Session) int {
	r.mu.Lock()
	rep, ok := r.replies[s.Command]
	r.mu.Unlock()
	if ok {
		return rep(s)
	}
	switch s.Command {
	case uploadIdentity, "sudo sh -c " + guestssh.Quote([]string{uploadIdentity}):
		return r.keep(s)
	case "sh " + provisionScript:
		fmt.Fprintln(s.Stdout, "provisioning: nixos-rebuild switch")
		return 0
	case "poweroff", "sudo poweroff":
		r.fake.Halt()
		return 0
	case shareCheck:
		fmt.Fprint(s.Stdout, "nixconfig 9p\nconfig\n")
		return 0
	case "sudo nixos-rebuild switch", tidyCommand:
		return 0
	}
	return sshtest.ExecHandler(r.t.TempDir())(s)
}

// keep reads the session's stdin, as an upload does, and keeps it.
func (r *rig) keep(s *sshtest.Session) int {
	data, err := io.ReadAll(s.Stdin)
	if err != nil {
		return 1
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stdin[s.Command] = data
	return 0
}

// exits is a reply that prints out and exits with code.
func exits(code int, out string) reply {
	return func(s *sshtest.Session) int {
		fmt.Fprint(s.Stdout, out)
		return code
	}
}

// lines checks that the output holds each of want, in order.
func (r *rig) lines(what string, want ...string) {
	r.t.Helper()
	out := r.out.String()
	rest := out
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			r.t.Errorf("%s: %q missing or out of order in:\n%s", what, w, out)
			return
		}
		rest = rest[i+len(w):]
	}
}

// lacks checks that the output holds none of unwanted.
func (r *rig) lacks(what string, unwanted ...string) {
	r.t.Helper()
	for _, u := range unwanted {
		if strings.Contains(r.out.String(), u) {
			r.t.Errorf("%s: unexpected %q in:\n%s", what, u, r.out.String())
		}
	}
}

// stopped checks that the guest is gone with nothing of it left behind.
func (r *rig) stopped(what string) {
	r.t.Helper()
	r.gone(what)
	if _, err := os.Stat(r.l().PIDFile()); !os.IsNotExist(err) {
		r.t.Errorf("%s: the pid file is left (%v)", what, err)
	}
}

// gone checks that the guest does not run and its run record is gone.
func (r *rig) gone(what string) {
	r.t.Helper()
	if st := r.status(); st.Running {
		r.t.Errorf("%s: the guest still runs (pid %d)", what, st.PID)
	}
	if _, err := os.Stat(r.l().RunRecord()); !os.IsNotExist(err) {
		r.t.Errorf("%s: the run record is left (%v)", what, err)
	}
}

// hostKeys are the keys pinned for the guest.
func (r *rig) hostKeys() []ssh.PublicKey {
	r.t.Helper()
	keys, err := guestssh.KnownHosts{Path: r.l().KnownHosts()}.Pinned(fmt.Sprintf("127.0.0.1:%s", r.env["ARMDEV_SSH_PORT"]))
	if err != nil {
		r.t.Fatal(err)
	}
	return keys
}

// pinned reports whether key is the one pinned for the guest.
func (r *rig) pinned(key ssh.PublicKey) bool {
	return slices.ContainsFunc(r.hostKeys(), func(k ssh.PublicKey) bool { return bytes.Equal(k.Marshal(), key.Marshal()) })
}

// diskPattern checks (or with write, writes) the first 64 KiB of the
// working disk as the byte pattern, with qemu-io; false when qemu-io is
// not there.
func (r *rig) diskPattern(write bool, pattern byte) bool {
	r.t.Helper()
	if _, err := exec.LookPath("qemu-io"); err != nil {
		return false
	}
	op := "read"
	if write {
		op = "write"
	}
	out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", fmt.Sprintf("%s -P 0x%02x 0 64k", op, pattern), r.l().Disk()).CombinedOutput()
	if err != nil || strings.Contains(string(out), "Pattern verification failed") {
		r.t.Errorf("qemu-io %s -P 0x%02x: %v\n%s", op, pattern, err, out)
	}
	return true
}
