package qemuvm

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
)

// maxSocketPath is the longest unix socket path the kernel accepts (sun_path holds
// 108 bytes on Linux and 104 on the BSDs and macOS, including the final NUL).
func maxSocketPath() int {
	if runtime.GOOS == "linux" {
		return 107
	}
	return 103
}

// SocketPath returns a unix socket path to use for want. That is want itself when it
// is short enough for the kernel; otherwise it is a short path with the same base
// name in a private directory (mode 0700) named after a hash of the absolute path of
// want's folder (so sockets of one workspace share it), under $XDG_RUNTIME_DIR or the
// temp directory. The result is the same on every call
// for the same want, so later commands find the socket again; the directory is
// created if needed, and refused if it belongs to someone else.
func SocketPath(want string) (string, error) {
	if len(want) <= maxSocketPath() {
		return want, nil
	}
	abs, err := filepath.Abs(want)
	if err != nil {
		return "", fmt.Errorf("socket path: %w", err)
	}
	sum := sha256.Sum256([]byte(filepath.Dir(abs)))
	// The hints name the variable that chose the folder: XDG_RUNTIME_DIR, when
	// set, wins over TMPDIR.
	base, baseVar := os.Getenv("XDG_RUNTIME_DIR"), "XDG_RUNTIME_DIR"
	if base == "" {
		base, baseVar = os.TempDir(), "TMPDIR"
	}
	dir := filepath.Join(base, "armdev-"+hex.EncodeToString(sum[:8]))
	p := filepath.Join(dir, filepath.Base(abs))
	if len(p) > maxSocketPath() {
		return "", fmt.Errorf("socket path: %s is too long for a unix socket, and so is the fallback %s: set %s to a short folder", want, p, baseVar)
	}
	if err := privateDir(dir, baseVar); err != nil {
		return "", fmt.Errorf("socket path: %w", err)
	}
	return p, nil
}

// privateDir makes sure dir exists, is a real directory owned by this user, and has
// mode 0700. baseVar names the variable that chose dir's parent, for the hint.
func privateDir(dir, baseVar string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !os.IsExist(err) {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory: remove it", dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("%s belongs to another user: remove it or set %s", dir, baseVar)
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return err
		}
	}
	return nil
}
