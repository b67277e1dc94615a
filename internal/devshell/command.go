package devshell

import (
	_ "embed"
	"strings"

	"github.com/rsonpath/armdev/internal/guestssh"
)

// evaluateSource is the slow path, run by bash in the guest when the cache
// has no environment for the key.
//
//go:embed evaluate.sh
var evaluateSource string

// evaluateScript is evaluateSource as sent with every command: without
// comments, indentation and blank lines, because the stand-in guest's sshd
// (dropbear) refuses commands longer than 9000 bytes.
var evaluateScript = compact(evaluateSource)

// compact drops comment lines, blank lines and indentation from a shell
// script. It is safe for scripts, like evaluate.sh, in which no line of a
// multi-line quoted string starts with # or a blank.
func compact(script string) string {
	var b strings.Builder
	for line := range strings.Lines(script) {
		line = strings.TrimLeft(line, " \t")
		if line == "\n" || strings.HasPrefix(line, "#") {
			continue
		}
		b.WriteString(line)
	}
	return b.String()
}

// dir is GuestDir with its default.
func (s Spec) dir() string {
	if s.GuestDir == "" {
		return DefaultGuestDir
	}
	return s.GuestDir
}

// guestDir is dir quoted for the guest's shell.
func (s Spec) guestDir() string {
	return guestssh.Quote([]string{s.dir()})
}

// cached is the path of one of the key's cache files, for the guest's shell.
func (s Spec) cached(suffix string) string {
	return `"` + CacheDir + "/" + s.Key + suffix + `"`
}

// evaluate is the guest command that evaluates the shell and caches it
// (evaluate.sh): its stdin is /dev/null and its output goes to stderr, so
// the command's own streams carry only the command's.
func (s Spec) evaluate() string {
	return guestssh.Quote([]string{"bash", "--noprofile", "--norc", "-c", evaluateScript,
		"armdev-devshell", s.Kind.String(), s.Files[0], s.Key, s.dir()}) + " </dev/null >&2"
}

// Command is the SSH exec string that runs args (non-empty) in the project
// folder, inside the dev shell when there is one. Without one (Kind None) it
// is exactly what armdev always ran: `cd /rsonpath 2>/dev/null; ARGS`. With
// one, the cached environment is loaded first (a `[ -r ]` test and a `.`:
// no process is started, no Nix runs), or evaluated when it is not there.
// Arguments keep their exact quoting, stdin and stdout are the command's
// alone (evaluation reads /dev/null and writes to stderr), and the exit
// status is the command's; a failed evaluation shows nix's error and exits
// 1 without running the command. The dev shell's part is about 4 KB (the
// evaluation script travels with every command), which leaves about 5 KB
// of arguments under the stand-in guest's dropbear limit of 9000 bytes;
// OpenSSH, NixOS's sshd, has no such limit.
func (s Spec) Command(args []string) string {
	cd := "cd " + s.guestDir() + " 2>/dev/null; "
	if s.Kind == None {
		return cd + guestssh.Quote(args)
	}
	env := s.cached(".env")
	return cd + "{ [ -r " + env + " ] || " + s.evaluate() + "; } && . " + env + " && " + guestssh.Quote(args)
}

// Shell is the SSH exec string of the interactive session (with a PTY): an
// interactive bash in the project folder whose rcfile sources ~/.bashrc,
// then the cached environment (not a login shell: /etc/profile would reset
// PATH). Without a dev shell it is the user's login shell, as always. If
// the evaluation fails, nix's error is shown and the session continues in
// the login shell, outside the dev shell, saying so.
func (s Spec) Shell() string {
	dir := s.guestDir()
	cd := "cd " + dir + ` 2>/dev/null || echo "armdev: ` + strings.ReplaceAll(dir, `"`, `\"`) + ` is not mounted" >&2; `
	login := `exec "${SHELL:-/bin/sh}" -l`
	if s.Kind == None {
		return cd + login
	}
	rc := s.cached(".bashrc")
	return cd + "{ [ -r " + s.cached(".env") + " ] && [ -r " + rc + " ] || " + s.evaluate() + "; } && exec bash --rcfile " + rc + " -i; " +
		`echo "armdev: this shell is outside the project's dev shell" >&2; ` + login
}

// Status says whether the guest has the dev shell cached.
type Status int

const (
	// StatusUnknown: the guest's answer was not understood.
	StatusUnknown Status = iota
	// StatusOff: the project has no dev shell (Kind None).
	StatusOff
	// StatusNone: nothing is cached: the first command evaluates the shell.
	StatusNone
	// StatusStale: an environment of other defining files is cached: the
	// next command evaluates the shell again.
	StatusStale
	// StatusCurrent: the environment for the current files is cached.
	StatusCurrent
)

// statusWords are the guest's answers to StatusCommand.
var statusWords = map[string]Status{"off": StatusOff, "none": StatusNone, "stale": StatusStale, "current": StatusCurrent}

// String says what the status means for the user.
func (st Status) String() string {
	switch st {
	case StatusOff:
		return "none (the project has no shell.nix, default.nix or flake.nix with devShells)"
	case StatusNone:
		return "not evaluated yet (the first command evaluates it)"
	case StatusStale:
		return "out of date (the next command evaluates it again)"
	case StatusCurrent:
		return "cached and current (commands load it without evaluating Nix)"
	default:
		return "unknown"
	}
}

// StatusCommand is a guest command that prints one word: current (the key's
// environment is cached), stale (another key's is), none, or off (Kind
// None). ParseStatus reads it.
func (s Spec) StatusCommand() string {
	if s.Kind == None {
		return "echo off"
	}
	return "if [ -r " + s.cached(".env") + " ]; then echo current; else s=none; for f in \"" + CacheDir + "\"/*.env; do " +
		`[ -e "$f" ] && s=stale; done; echo "$s"; fi`
}

// ParseStatus reads StatusCommand's output.
func ParseStatus(out string) Status {
	return statusWords[strings.TrimSpace(out)]
}

// RefreshCommand is a guest command that deletes the user's cached dev
// shells (and so their garbage collector roots) and evaluates the current
// one now, for when a file the key does not cover changed. Its exit status
// is the evaluation's. Without a dev shell it only deletes the cache.
func (s Spec) RefreshCommand() string {
	clear := `rm -rf "` + CacheDir + `"`
	if s.Kind == None {
		return clear + `; echo "armdev: the project has no dev shell (no shell.nix, default.nix or flake.nix with devShells)" >&2`
	}
	return clear + " && " + s.evaluate()
}
