package disk

import (
	"os"
	"syscall"
)

// syncFileRangeWrite is SYNC_FILE_RANGE_WRITE from <fcntl.h>.
const syncFileRangeWrite = 2

// startWriteback asks the kernel to start writing f's dirty pages in
// [off, off+n) to disk without waiting for it, so that a later f.Sync has
// less left to do. It is only a hint: errors are ignored, and Sync still
// reports any write error.
func startWriteback(f *os.File, off, n int64) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = syscall.SyncFileRange(int(fd), off, n, syncFileRangeWrite)
	})
}
