package disk

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// lookTool finds an e2fsprogs command. Debian keeps them in /usr/sbin and
// /sbin, which are not on the PATH of ordinary users.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH, in /usr/sbin or in /sbin: install e2fsprogs", name)
}
