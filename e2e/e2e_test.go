// Package e2e drives armdev's real `just` recipes against a real aarch64
// guest booted by real QEMU and u-boot: the stand-in guest laid out like the
// NixOS SD image, served by a fake Hydra on loopback.
package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rsonpath/armdev/internal/harness"
	"github.com/rsonpath/armdev/internal/workspace"
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
// commands over SSH → shutdown → start → kill → reset → start.
func TestEndToEnd(t *testing.T) {
	if os.Getenv("ARMDEV_E2E") != "1" {
		t.Skip("set ARMDEV_E2E=1 to boot the aarch64 stand-in guest (see README)")
	}
	if missing := harness.Prerequisites(); len(missing) > 0 {
		t.Fatalf("ARMDEV_E2E=1 but prerequisites are missing:\n%s", strings.Join(missing, "\n"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	h, err := harness.New(ctx, repoRoot(t), t.TempDir(), testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	t.Cleanup(func() { h.Just(context.Background(), nil, "arm-dev-kill") })

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
	for _, want := range []string{"running", fmt.Sprintf("127.0.0.1:%d", h.Port), "Hydra build", "applied"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, r.Stdout)
		}
	}
	// Starting a running guest says so and succeeds.
	r = must(h.Just(ctx, nil, "arm-dev"), "arm-dev while running")
	if !strings.Contains(r.Stdout, "already running") {
		t.Errorf("second start: %s", r)
	}

	// A second workspace runs side by side: its own state, its own port.
	sideBySide(t, ctx, h)

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

	// the shared folder, both ways.
	hostNote := fmt.Sprintf("from the host %d\n", time.Now().UnixNano())
	if err := os.WriteFile(filepath.Join(h.Share, "host-note.txt"), []byte(hostNote), 0o644); err != nil {
		t.Fatal(err)
	}
	if r = must(ssh("cat", "/rsonpath/host-note.txt"), "read shared file"); r.Stdout != hostNote {
		t.Errorf("guest read %q, want %q", r.Stdout, hostNote)
	}
	must(ssh("sh", "-c", "uname -m > /rsonpath/guest-note.txt"), "write shared file")
	if data, err := os.ReadFile(filepath.Join(h.Share, "guest-note.txt")); err != nil || string(data) != "aarch64\n" {
		t.Errorf("host read %q, %v", data, err)
	}
	if st, err := os.Stat(filepath.Join(h.Share, "guest-note.txt")); err != nil || int(st.Sys().(*syscall.Stat_t).Uid) != workspace.GuestUID() {
		t.Errorf("a file the guest made in /rsonpath should belong to uid %d on the host: %v %v", workspace.GuestUID(), st, err)
	}

	// update and tidy run the guest's tools as the guest user through sudo.
	must(h.Just(ctx, nil, "arm-dev-update"), "arm-dev-update")
	must(h.Just(ctx, nil, "arm-dev-tidy"), "arm-dev-tidy")
	calls := standinCalls(t, ssh)
	// provisioning: root's switch; update: armdev's sudo, then a root switch;
	// tidy: armdev's nix-env, then root's nix-env and nix-store through sudo.
	want := []string{
		"uid=0 user=root cmd=nixos-rebuild args=switch",
		"user=armdev cmd=sudo args=nixos-rebuild switch",
		"uid=0 user=root cmd=nixos-rebuild args=switch",
		"user=armdev cmd=nix-env args=--delete-generations +1",
		"user=armdev cmd=sudo args=nix-env --profile /nix/var/nix/profiles/system --delete-generations +2",
		"uid=0 user=root cmd=nix-env args=--profile /nix/var/nix/profiles/system --delete-generations +2",
		"user=armdev cmd=sudo args=nix-store --gc",
		"uid=0 user=root cmd=nix-store args=--gc",
	}
	var got []string
	for _, c := range calls {
		if !strings.Contains(c, "cmd=nix-shell") {
			got = append(got, c)
		}
	}
	if len(got) != len(want) {
		t.Errorf("stand-in calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	} else {
		for i := range want {
			if !strings.HasSuffix(got[i], want[i]) {
				t.Errorf("stand-in call %d = %q, want it to end with %q", i, got[i], want[i])
			}
		}
	}

	// an interactive shell through tmux lands in /rsonpath, inside
	// nix-shell when the project has a shell.nix, and echoes.
	if err := os.WriteFile(filepath.Join(h.Share, "shell.nix"), []byte("{ }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	interactive(t, ctx, h, "just arm-dev-ssh", "exit")
	if got := filter(standinCalls(t, ssh), "cmd=nix-shell"); len(got) != 1 || !strings.Contains(got[0], "user=armdev") {
		t.Errorf("the interactive shell should enter nix-shell once as armdev: %q", got)
	}
	// the serial console: a root shell on ttyAMA0 in the stand-in; Ctrl-] detaches.
	interactive(t, ctx, h, "just arm-dev-console", "C-]")

	// the generated config works with the system's OpenSSH client.
	must(h.Just(ctx, nil, "arm-dev-ssh-config"), "arm-dev-ssh-config")
	cfg := filepath.Join(h.State, "ssh", "config")
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
	knownHosts := filepath.Join(h.State, "ssh", "known_hosts")
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

func countRequests(h *harness.Harness, part string) int {
	n := 0
	for _, r := range h.Hydra.Requests() {
		if strings.HasPrefix(r, "GET ") && strings.Contains(r, part) {
			n++
		}
	}
	return n
}

// listeners returns the local addresses listening on TCP port.
func listeners(t *testing.T, port int) []string {
	t.Helper()
	var addrs []string
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(file)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 || fields[3] != "0A" { // LISTEN
				continue
			}
			host, p, ok := strings.Cut(fields[1], ":")
			if n, err := strconv.ParseInt(p, 16, 32); !ok || err != nil || int(n) != port {
				continue
			}
			addrs = append(addrs, procAddr(host))
		}
		f.Close()
	}
	return addrs
}

// procAddr turns /proc/net/tcp's little-endian hex address into text.
func procAddr(hexAddr string) string {
	if len(hexAddr) != 8 {
		return "[" + hexAddr + "]"
	}
	b := make(net.IP, 4)
	for i := range 4 {
		v, _ := strconv.ParseUint(hexAddr[2*i:2*i+2], 16, 8)
		b[3-i] = byte(v)
	}
	return b.String()
}

// standinCalls reads the guest stand-ins' call log.
func standinCalls(t *testing.T, ssh func(...string) harness.Result) []string {
	t.Helper()
	r := ssh("cat", "/var/log/armdev-standin.log")
	if r.Code != 0 {
		t.Fatalf("read stand-in log: %s", r)
	}
	return strings.Split(strings.TrimSpace(r.Stdout), "\n")
}

func filter(lines []string, part string) []string {
	var out []string
	for _, l := range lines {
		if strings.Contains(l, part) {
			out = append(out, l)
		}
	}
	return out
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// a zombie is not alive
		if f := strings.Fields(string(data)); len(f) > 2 && f[2] == "Z" {
			return false
		}
	}
	return syscall.Kill(pid, 0) == nil
}

// startDecoy runs a copy of sleep named armdev-guest: same process name as
// our QEMU, but not ours.
func startDecoy(t *testing.T) *exec.Cmd {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "armdev-guest")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid)); strings.TrimSpace(string(comm)) != "armdev-guest" {
		t.Fatalf("decoy's name is %q", comm)
	}
	return cmd
}

// interactive runs command in a tmux pane, waits for a prompt, types a
// command and reads its answer, then leaves with the keys in quit.
func interactive(t *testing.T, ctx context.Context, h *harness.Harness, command, quit string) {
	t.Helper()
	session := fmt.Sprintf("armdev-e2e-%d", os.Getpid())
	env := []string{}
	for _, kv := range h.Env() {
		if strings.HasPrefix(kv, "ARMDEV_") || strings.HasPrefix(kv, "PATH=") || strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "GO") {
			env = append(env, "-e", kv)
		}
	}
	args := append([]string{"new-session", "-d", "-s", session, "-x", "120", "-y", "30"}, env...)
	args = append(args, "-c", h.Root, command+"; echo ARMDEV-SESSION-ENDED status=$?; sleep 600")
	if r := h.Command(ctx, nil, "tmux", args...); r.Code != 0 {
		t.Fatalf("tmux: %s", r)
	}
	defer h.Command(context.Background(), nil, "tmux", "kill-session", "-t", session)
	capture := func() string {
		return h.Command(ctx, nil, "tmux", "capture-pane", "-p", "-t", session).Stdout
	}
	waitFor := func(what string, re *regexp.Regexp) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !re.MatchString(capture()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no %s; screen:\n%s", command, what, capture())
			}
			select {
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	if strings.Contains(command, "console") {
		// the console shows what is already on it; ask for a fresh prompt
		h.Command(ctx, nil, "tmux", "send-keys", "-t", session, "Enter")
	}
	waitFor("prompt", regexp.MustCompile(`[$#] ?\s*$`))
	h.Command(ctx, nil, "tmux", "send-keys", "-t", session, "echo typed-$((6*7)) on $(uname -m) in $(pwd)", "Enter")
	waitFor("echo of the typed command", regexp.MustCompile(`(?m)^typed-42 on aarch64 in /\S*\s*$`))
	if strings.Contains(command, "ssh") && !regexp.MustCompile(`(?m)^typed-42 on aarch64 in /rsonpath\s*$`).MatchString(capture()) {
		t.Errorf("the shell did not land in /rsonpath:\n%s", capture())
	}
	h.Command(ctx, nil, "tmux", "send-keys", "-t", session, quit)
	if quit == "exit" {
		h.Command(ctx, nil, "tmux", "send-keys", "-t", session, "Enter")
	}
	waitFor("end of the session", regexp.MustCompile(`ARMDEV-SESSION-ENDED status=0`))
}

// sideBySide checks a second workspace next to the running one: a taken
// port is named, a failed provisioning keeps the disk and names its log,
// and a rerun provisions; the first guest keeps running throughout.
func sideBySide(t *testing.T, ctx context.Context, h *harness.Harness) {
	t.Helper()
	h2, err := h.Sibling(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Just(context.Background(), nil, "arm-dev-kill")

	h2.Extra = []string{fmt.Sprintf("ARMDEV_SSH_PORT=%d", h.Port)}
	r := h2.Just(ctx, nil, "arm-dev-init")
	if r.Code == 0 || !strings.Contains(r.Stderr, fmt.Sprintf("SSH port %d on 127.0.0.1 is in use: set ARMDEV_SSH_PORT", h.Port)) {
		t.Errorf("a taken port: %s", r)
	}
	h2.Extra = nil

	conf := filepath.Join(h2.NixOS, "configuration.nix")
	good, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, append([]byte("# armdev-standin-fail\n"), good...), 0o644); err != nil {
		t.Fatal(err)
	}
	r = h2.Just(ctx, nil, "arm-dev-init")
	if r.Code == 0 || !strings.Contains(r.Stderr, "provisioning failed") || !strings.Contains(r.Stderr, "provision.log") {
		t.Errorf("a failing provisioning: %s", r)
	}
	if _, err := os.Stat(filepath.Join(h2.State, "disk.qcow2")); err != nil {
		t.Errorf("the disk was not kept for inspection: %v", err)
	}
	if alive(h2.PID()) {
		t.Errorf("the failed provisioning left its guest running")
	}
	if err := os.WriteFile(conf, good, 0o644); err != nil {
		t.Fatal(err)
	}
	r = h2.Just(ctx, nil, "arm-dev-init")
	if r.Code != 0 || !strings.Contains(r.Stdout, "provisioned") {
		t.Errorf("rerun after a failed provisioning: %s", r)
	}
	log, _ := os.ReadFile(filepath.Join(h2.State, "logs", "provision.log"))
	if n := strings.Count(string(log), "=== provisioning"); n != 2 || !strings.Contains(string(log), "armdev: provisioning done") {
		t.Errorf("provision.log should hold a failed and a successful run:\n%s", log)
	}
	// the first workspace's guest was not disturbed
	if r := h.Just(ctx, nil, "arm-dev-ssh", "true"); r.Code != 0 {
		t.Errorf("the first guest stopped answering: %s", r)
	}
}

// testWriter sends harness output to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
