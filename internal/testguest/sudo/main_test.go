//go:build linux

package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		args         []string
		login, help  bool
		cmd          []string
		wantErrMatch string
	}{
		{args: nil},
		{args: []string{"poweroff"}, cmd: []string{"poweroff"}},
		{args: []string{"-n", "nix-store", "--gc"}, cmd: []string{"nix-store", "--gc"}},
		{args: []string{"--", "-x", "y"}, cmd: []string{"-x", "y"}},
		{args: []string{"-i"}, login: true},
		{args: []string{"--login", "id", "-u"}, login: true, cmd: []string{"id", "-u"}},
		{args: []string{"-h"}, help: true},
		{args: []string{"-u", "root", "id"}, wantErrMatch: "unknown option -u"},
		{args: []string{"-x"}, wantErrMatch: "unknown option -x"},
	} {
		o, cmd, err := parseArgs(tc.args)
		if tc.wantErrMatch != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErrMatch) {
				t.Errorf("parseArgs(%q) error = %v, want one with %q", tc.args, err, tc.wantErrMatch)
			}
			continue
		}
		if err != nil || o.login != tc.login || o.help != tc.help || !slices.Equal(cmd, tc.cmd) {
			t.Errorf("parseArgs(%q) = %+v %q %v, want login=%v help=%v %q", tc.args, o, cmd, err, tc.login, tc.help, tc.cmd)
		}
	}
}

func TestFiles(t *testing.T) {
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	group := filepath.Join(dir, "group")
	write(t, passwd, "root:x:0:0:System administrator:/root:/bin/ash\n# comment\narmdev:x:1000:1000:armdev user:/home/armdev:/bin/sh\n", 0o644)
	write(t, group, "root:x:0:\nwheel:x:1:armdev,other\nkvm:x:7:root\nstaff:x:50:\n", 0o644)

	if got := userName(passwd, 1000); got != "armdev" {
		t.Errorf("userName(1000) = %q", got)
	}
	if got := userName(passwd, 1234); got != "1234" {
		t.Errorf("userName(1234) = %q, want the number", got)
	}
	if got := loginShell(passwd); got != "/bin/ash" {
		t.Errorf("loginShell = %q, want root's /bin/ash", got)
	}
	if got := loginShell(filepath.Join(dir, "missing")); got != "/bin/sh" {
		t.Errorf("loginShell without passwd = %q, want /bin/sh", got)
	}
	for _, tc := range []struct {
		name string
		gids []int
		want bool
	}{
		{"armdev", []int{1000}, true}, // listed as a member
		{"other", nil, true},
		{"nobody", []int{65534}, false},
		{"nobody", []int{65534, 1}, true}, // wheel by group id
		{"arm", []int{1000}, false},       // no prefix matches
	} {
		if got := inGroup(group, "wheel", tc.name, tc.gids); got != tc.want {
			t.Errorf("inGroup(wheel, %s, %v) = %v, want %v", tc.name, tc.gids, got, tc.want)
		}
	}
	if inGroup(group, "missing", "armdev", []int{0, 1, 1000}) {
		t.Error("a group missing from the file has members")
	}
	if got := rootGroups(group); !slices.Equal(got, []int{0, 7}) {
		t.Errorf("rootGroups = %v, want [0 7]", got)
	}
}

func TestRootEnv(t *testing.T) {
	env := rootEnv([]string{"HOME=/home/armdev", "USER=armdev", "PATH=/a:/b", "TERM=vt100", "SUDO_COMMAND=x"}, "armdev", 1000, 100)
	want := []string{"PATH=/a:/b", "TERM=vt100", "SUDO_USER=armdev", "SUDO_UID=1000", "SUDO_GID=100", "HOME=/root", "USER=root", "LOGNAME=root"}
	if !slices.Equal(env, want) {
		t.Errorf("rootEnv = %q, want %q", env, want)
	}
	if env := rootEnv(nil, "armdev", 1000, 100); !slices.Contains(env, "PATH="+strings.Join(securePath, ":")) {
		t.Errorf("without PATH, rootEnv = %q, want the secure path", env)
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, d := range []string{a, b} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(t, filepath.Join(a, "tool"), "#!/bin/sh\n", 0o644) // not executable
	write(t, filepath.Join(b, "tool"), "#!/bin/sh\n", 0o755)
	dirs := searchPath([]string{"PATH=.:" + a + "::relative:" + b})
	if dirs[0] != a || dirs[1] != b || len(dirs) != 2+len(securePath) {
		t.Fatalf("searchPath = %q, want %s, %s then the secure path", dirs, a, b)
	}
	if got := lookPath("tool", dirs); got != filepath.Join(b, "tool") {
		t.Errorf("lookPath(tool) = %q, want the executable one in %s", got, b)
	}
	if got := lookPath(filepath.Join(a, "tool"), dirs); got != "" {
		t.Errorf("lookPath of a non-executable path = %q", got)
	}
	if got := lookPath("no-such-tool", dirs); got != "" {
		t.Errorf("lookPath(no-such-tool) = %q", got)
	}
}

// TestSetuid builds sudo for this machine, installs it setuid root in a
// scratch directory (with its own passwd, group and log files) and runs it
// as two unprivileged users: one in wheel, one not. Needs root.
func TestSetuid(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to install a setuid-root binary and run it as other users")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not found in PATH")
	}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // let the test users in
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	passwd := filepath.Join(dir, "passwd")
	group := filepath.Join(dir, "group")
	logDir := filepath.Join(dir, "log")
	logFile := filepath.Join(logDir, "armdev-standin.log")
	write(t, passwd, "root:x:0:0:root:/root:/bin/sh\nalice:x:61000:61000::/:/bin/sh\nbob:x:61001:61001::/:/bin/sh\n", 0o644)
	write(t, group, "root:x:0:\nwheel:x:1:alice\n", 0o644)
	if err := os.Mkdir(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(logDir, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	sudo := filepath.Join(dir, "sudo")
	build := exec.Command(goBin, "build", "-o", sudo, "-ldflags",
		"-X main.logPath="+logFile+" -X main.passwdPath="+passwd+" -X main.groupPath="+group, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if err := os.Chmod(sudo, os.ModeSetuid|0o755); err != nil {
		t.Fatal(err)
	}
	var fsst syscall.Statfs_t
	if syscall.Statfs(sudo, &fsst) == nil && fsst.Flags&0x2 != 0 { // ST_NOSUID
		t.Skip("the temporary directory is mounted nosuid")
	}

	runAs := func(uid int, args ...string) (stdout, stderr string, code int) {
		t.Helper()
		cmd := exec.Command(sudo, args...)
		cmd.Dir = "/"
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/", "USER=someone"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{}}}
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var exit *exec.ExitError
		switch {
		case errors.As(err, &exit):
			code = exit.ExitCode()
		case err != nil:
			t.Fatalf("run sudo as %d: %v", uid, err)
		}
		return o.String(), e.String(), code
	}

	start := time.Now().Unix()
	out, errOut, code := runAs(61000, "sh", "-c", `echo "$(id -u) $(id -g) $(id -G) $SUDO_USER $SUDO_UID $SUDO_GID $HOME $USER $LOGNAME $PATH"`)
	if want := "0 0 0 alice 61000 61000 /root root root /usr/bin:/bin\n"; code != 0 || out != want {
		t.Errorf("sudo sh -c … as alice (wheel): exit %d, stdout %q (want %q), stderr %q", code, out, want, errOut)
	}
	st, err := os.Stat(logFile)
	if err != nil {
		t.Fatalf("sudo wrote no log: %v", err)
	}
	if uid := st.Sys().(*syscall.Stat_t).Uid; uid != 61000 {
		t.Errorf("the log was created by uid %d, want the caller's 61000", uid)
	}
	if err := os.Chmod(logFile, 0o666); err != nil {
		t.Fatal(err)
	}

	if out, errOut, code := runAs(61001, "id", "-u"); code != 1 || out != "" || !strings.Contains(errOut, "sudo: bob is not in the sudoers file") {
		t.Errorf("sudo id -u as bob (not in wheel): exit %d, stdout %q, stderr %q; want a refusal", code, out, errOut)
	}
	if out, errOut, code := runAs(61000, "-i", "id", "-u"); code != 0 || !strings.HasSuffix(out, "0\n") {
		t.Errorf("sudo -i id -u as alice: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if _, errOut, code := runAs(61000); code != 1 || !strings.Contains(errOut, "usage: sudo") {
		t.Errorf("sudo without arguments: exit %d, stderr %q; want usage and 1", code, errOut)
	}
	if _, errOut, code := runAs(61000, "-u", "bob", "id"); code != 1 || !strings.Contains(errOut, "unknown option -u") {
		t.Errorf("sudo -u bob id: exit %d, stderr %q; want a refusal", code, errOut)
	}
	if _, errOut, code := runAs(61000, "no-such-command-here"); code != 1 || !strings.Contains(errOut, "command not found") {
		t.Errorf("sudo no-such-command-here: exit %d, stderr %q", code, errOut)
	}

	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	want := []string{
		"uid=61000 user=alice cmd=sudo args=sh -c ",
		"uid=61001 user=bob cmd=sudo args=id -u",
		"uid=61000 user=alice cmd=sudo args=-i id -u",
		"uid=61000 user=alice cmd=sudo args=",
		"uid=61000 user=alice cmd=sudo args=-u bob id",
		"uid=61000 user=alice cmd=sudo args=no-such-command-here",
	}
	if len(lines) != len(want) {
		t.Fatalf("log has %d lines, want %d:\n%s", len(lines), len(want), b)
	}
	for i, l := range lines {
		ts, rest, _ := strings.Cut(l, " ")
		sec, err := strconv.ParseInt(ts, 10, 64)
		if err != nil || sec < start || sec > time.Now().Unix() || !strings.HasPrefix(rest, want[i]) {
			t.Errorf("log line %d = %q, want <unix time> %s…", i, l, want[i])
		}
	}
}

func write(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
