package workspace

import (
	"fmt"
	"os/exec"
)

// requireTools checks that the host programs a step runs are there, so
// that a missing one is one line that says how to get it rather than an
// exec error in the middle of the work.
func (w *Workspace) requireTools(names ...string) error {
	hints := map[string]string{
		w.Cfg.QEMU:    "qemu-system-aarch64 (nix-shell has it; Debian: apt-get install qemu-system-arm; or set ARMDEV_QEMU)",
		w.Cfg.QEMUImg: "qemu-img (nix-shell has it; Debian: apt-get install qemu-utils; or set ARMDEV_QEMU_IMG)",
	}
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			hint := hints[name]
			if hint == "" {
				hint = name
			}
			return fmt.Errorf("%s was not found on PATH: install %s", name, hint)
		}
	}
	return nil
}
