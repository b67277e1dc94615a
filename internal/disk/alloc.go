package disk

import (
	"fmt"
	"os"
	"syscall"
)

// Allocated returns the bytes the file at path takes on disk, which is less
// than its size when it has holes.
func Allocated(path string) (int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("allocated size: %w", err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("allocated size of %s: unsupported platform", path)
	}
	return sys.Blocks * 512, nil
}
