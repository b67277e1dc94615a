//go:build linux

// Command sudo is the armdev stand-in guest's sudo: a setuid-root program
// that lets root and the members of group wheel run a command as root
// without a password, as NixOS's sudo does for wheel when
// security.sudo.wheelNeedsPassword is false.
//
// testguest.Build compiles it (static, linux/arm64) and installs it as
// /run/current-system/sw/bin/sudo, owned by root with mode 04755. Every
// call first appends one line to /var/log/armdev-standin.log, as the
// calling user and in the format of the other stand-ins:
//
//	<unix time> uid=<real uid> user=<name> cmd=sudo args=<arguments>
//
// Then it refuses callers that are neither root nor in wheel, becomes root
// (uid, gid and groups), sets SUDO_USER, SUDO_UID, SUDO_GID, HOME, USER and
// LOGNAME, keeps the rest of the environment, and executes the command,
// found through PATH and then the usual system directories.
//
// Options: -i/--login (root's login shell), -n and -E (accepted, no effect:
// there is no password and the environment is kept), -h, and --.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The files sudo reads and writes. Variables rather than constants only so
// that its test can point them elsewhere with -ldflags=-X.
var (
	logPath    = "/var/log/armdev-standin.log"
	passwdPath = "/etc/passwd"
	groupPath  = "/etc/group"
)

// adminGroup is the group whose members may use sudo.
const adminGroup = "wheel"

// securePath is searched after the caller's PATH.
var securePath = []string{
	"/run/wrappers/bin", "/run/current-system/sw/bin",
	"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin",
}

const usage = `usage: sudo -h
usage: sudo [-nE] [--] command [arg ...]
usage: sudo -i [-nE] [--] [command [arg ...]]
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is sudo's main; it returns only on failure or for -h.
func run(args []string, stdout, stderr io.Writer) int {
	ruid, rgid := syscall.Getuid(), syscall.Getgid()
	// Act as the caller until the checks pass (the saved uid stays 0).
	if syscall.Geteuid() != ruid {
		if err := syscall.Setresuid(-1, ruid, -1); err != nil {
			fmt.Fprintf(stderr, "sudo: drop privileges: %v\n", err)
			return 1
		}
	}
	name := userName(passwdPath, ruid)
	logCall(logPath, time.Now(), ruid, name, args)

	opts, cmd, err := parseArgs(args)
	if err != nil {
		fmt.Fprintf(stderr, "sudo: %v\n%s", err, usage)
		return 1
	}
	if opts.help {
		fmt.Fprint(stdout, usage)
		return 0
	}
	if len(cmd) == 0 && !opts.login {
		fmt.Fprint(stderr, usage)
		return 1
	}
	gids, _ := syscall.Getgroups()
	if ruid != 0 && !inGroup(groupPath, adminGroup, name, append(gids, rgid)) {
		fmt.Fprintf(stderr, "sudo: %s is not in the sudoers file\n", name)
		return 1
	}

	if err := becomeRoot(); err != nil {
		fmt.Fprintf(stderr, "sudo: %v (sudo must be owned by uid 0 and have the setuid bit set)\n", err)
		return 1
	}
	env := rootEnv(os.Environ(), name, ruid, rgid)
	var path string
	var argv []string
	if opts.login {
		shell := loginShell(passwdPath)
		path, argv = shell, []string{"-" + filepath.Base(shell)}
		if len(cmd) > 0 {
			argv = append(argv, "-c", strings.Join(cmd, " "))
		}
		if err := os.Chdir("/root"); err != nil {
			fmt.Fprintf(stderr, "sudo: %v\n", err)
		}
	} else {
		path = lookPath(cmd[0], searchPath(env))
		if path == "" {
			fmt.Fprintf(stderr, "sudo: %s: command not found\n", cmd[0])
			return 1
		}
		argv = cmd
	}
	err = syscall.Exec(path, argv, env)
	fmt.Fprintf(stderr, "sudo: unable to execute %s: %v\n", path, err)
	return 1
}

// options are sudo's parsed flags.
type options struct{ login, help bool }

// parseArgs splits sudo's arguments into its options and the command.
func parseArgs(args []string) (options, []string, error) {
	var o options
	for i, a := range args {
		switch a {
		case "--":
			return o, args[i+1:], nil
		case "-i", "--login":
			o.login = true
		case "-h", "--help":
			o.help = true
		case "-n", "--non-interactive", "-E", "--preserve-env":
		default:
			if strings.HasPrefix(a, "-") && a != "-" {
				return o, nil, fmt.Errorf("unknown option %s (the armdev stand-in knows -i, -n, -E, -h)", a)
			}
			return o, args[i:], nil
		}
	}
	return o, nil, nil
}

// logCall appends sudo's line to the stand-in log; failures are ignored,
// as the shell stand-ins ignore them.
func logCall(path string, now time.Time, uid int, name string, args []string) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%d uid=%d user=%s cmd=sudo args=%s\n", now.Unix(), uid, name, strings.Join(args, " "))
}

// fields returns the colon-separated fields of the lines of an
// /etc/passwd-style file.
func fields(path string) [][]string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, strings.Split(line, ":"))
	}
	return out
}

// userName is the name of uid in the passwd file, else the number.
func userName(passwd string, uid int) string {
	for _, f := range fields(passwd) {
		if len(f) >= 3 && f[2] == strconv.Itoa(uid) {
			return f[0]
		}
	}
	return strconv.Itoa(uid)
}

// loginShell is root's shell in the passwd file, else /bin/sh.
func loginShell(passwd string) string {
	for _, f := range fields(passwd) {
		if len(f) >= 7 && f[2] == "0" && filepath.IsAbs(f[6]) {
			return f[6]
		}
	}
	return "/bin/sh"
}

// inGroup reports whether a user named name whose process has the group
// ids gids belongs to the group called group: by id, or listed as a member.
func inGroup(groupFile, group, name string, gids []int) bool {
	for _, f := range fields(groupFile) {
		if len(f) < 3 || f[0] != group {
			continue
		}
		if gid, err := strconv.Atoi(f[2]); err == nil && slices.Contains(gids, gid) {
			return true
		}
		return len(f) >= 4 && slices.Contains(strings.Split(f[3], ","), name)
	}
	return false
}

// rootGroups are root's supplementary groups: 0 and every group of the
// group file that lists root.
func rootGroups(groupFile string) []int {
	gids := []int{0}
	for _, f := range fields(groupFile) {
		if len(f) < 4 || !slices.Contains(strings.Split(f[3], ","), "root") {
			continue
		}
		if gid, err := strconv.Atoi(f[2]); err == nil && !slices.Contains(gids, gid) {
			gids = append(gids, gid)
		}
	}
	return gids
}

// becomeRoot switches uid, gid and groups to root's. It needs the saved
// uid to be 0, i.e. a setuid-root binary.
func becomeRoot() error {
	if err := syscall.Setresuid(0, 0, 0); err != nil {
		return fmt.Errorf("setuid 0: %w", err)
	}
	if err := syscall.Setgroups(rootGroups(groupPath)); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setresgid(0, 0, 0); err != nil {
		return fmt.Errorf("setgid 0: %w", err)
	}
	return nil
}

// rootEnv is the caller's environment with sudo's variables set for root;
// PATH is kept (the secure path when unset).
func rootEnv(environ []string, name string, uid, gid int) []string {
	set := map[string]string{
		"SUDO_USER": name,
		"SUDO_UID":  strconv.Itoa(uid),
		"SUDO_GID":  strconv.Itoa(gid),
		"HOME":      "/root",
		"USER":      "root",
		"LOGNAME":   "root",
	}
	var env []string
	hasPath := false
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := set[k]; ok || strings.HasPrefix(k, "SUDO_") {
			continue
		}
		if k == "PATH" {
			hasPath = true
		}
		env = append(env, kv)
	}
	if !hasPath {
		env = append(env, "PATH="+strings.Join(securePath, ":"))
	}
	for _, k := range []string{"SUDO_USER", "SUDO_UID", "SUDO_GID", "HOME", "USER", "LOGNAME"} {
		env = append(env, k+"="+set[k])
	}
	return env
}

// searchPath is the absolute directories of env's PATH, then securePath.
func searchPath(env []string) []string {
	var dirs []string
	for _, kv := range env {
		if p, ok := strings.CutPrefix(kv, "PATH="); ok {
			for _, d := range filepath.SplitList(p) {
				if filepath.IsAbs(d) { // like sudo, never "." or relative entries
					dirs = append(dirs, d)
				}
			}
		}
	}
	return append(dirs, securePath...)
}

// lookPath finds the executable cmd: as given when it has a slash, else in
// dirs. It returns "" when there is none.
func lookPath(cmd string, dirs []string) string {
	isExec := func(p string) bool {
		st, err := os.Stat(p)
		return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
	}
	if strings.Contains(cmd, "/") {
		if isExec(cmd) {
			return cmd
		}
		return ""
	}
	for _, d := range dirs {
		if p := filepath.Join(d, cmd); isExec(p) {
			return p
		}
	}
	return ""
}
