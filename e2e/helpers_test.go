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
	"github.com/rsonpath/armdev/internal/instance"
)

// logCmdlineOnFailure prints, when the test fails, the QEMU command line
// that reproduces the guest (the first lines of logs/qemu.log), as
// vmtest's StartT does.
func logCmdlineOnFailure(t *testing.T, h *harness.Harness) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		data, err := os.ReadFile(h.Layout().QEMULog())
		if err != nil {
			t.Logf("no QEMU command line to show: %v", err)
			return
		}
		lines := strings.SplitN(string(data), "\n", 3)
		t.Logf("QEMU command line to reproduce the guest:\n%s", strings.Join(lines[:min(2, len(lines))], "\n"))
	})
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

// nixCallRE matches the calls that change the guest's system: switches,
// profile and store maintenance, directly or through sudo.
var nixCallRE = regexp.MustCompile(`cmd=(sudo args=)?(nixos-rebuild|nix-env|nix-store)( |$)`)

// nixCalls keeps the calls nixCallRE matches.
func nixCalls(lines []string) []string {
	var out []string
	for _, l := range lines {
		if nixCallRE.MatchString(l) {
			out = append(out, l)
		}
	}
	return out
}

// wantCalls checks that got ends, call by call, with want's suffixes.
func wantCalls(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("stand-in calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		return
	}
	for i := range want {
		if !strings.HasSuffix(got[i], want[i]) {
			t.Errorf("stand-in call %d = %q, want it to end with %q", i, got[i], want[i])
		}
	}
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

func fileUID(t *testing.T, path string) int {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return int(st.Sys().(*syscall.Stat_t).Uid)
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
	bin := filepath.Join(t.TempDir(), instance.GuestName)
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid)); strings.TrimSpace(string(comm)) != instance.GuestName {
		t.Fatalf("decoy's name is %q", comm)
	}
	return cmd
}

// step is one thing typed into an interactive session and what the screen
// must show afterwards.
type step struct {
	keys string
	want *regexp.Regexp
}

// interactive runs command in a tmux pane, waits for a prompt, types a
// command and reads its answer, runs the extra steps, then leaves with the
// keys in quit.
func interactive(t *testing.T, ctx context.Context, h *harness.Harness, command, quit string, extra []step) {
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
	for _, s := range extra {
		h.Command(ctx, nil, "tmux", "send-keys", "-t", session, s.keys, "Enter")
		waitFor("answer to "+s.keys, s.want)
	}
	h.Command(ctx, nil, "tmux", "send-keys", "-t", session, quit)
	if quit == "exit" {
		h.Command(ctx, nil, "tmux", "send-keys", "-t", session, "Enter")
	}
	waitFor("end of the session", regexp.MustCompile(`ARMDEV-SESSION-ENDED status=0`))
}

// testWriter sends harness output to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
