package disk

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// SbinDirs are where Debian keeps e2fsprogs, dosfstools and fdisk: folders
// that are not on the PATH of ordinary users.
var SbinDirs = []string{"/usr/sbin", "/sbin"}

// LookTool finds a system tool such as debugfs: on PATH, else in SbinDirs.
func LookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range SbinDirs {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH, in /usr/sbin or in /sbin: install e2fsprogs", name)
}
