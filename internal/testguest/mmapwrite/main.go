//go:build linux

// Command armdev-mmap-write proves that a file system allows shared writable
// memory maps, as sqlite, LMDB and some build tools need: 9p mounted with
// cache=none refuses them (mmap fails with EINVAL), cache=mmap allows them.
//
//	armdev-mmap-write FILE TEXT
//
// opens FILE read-write (creating it), sizes it to TEXT, maps it with
// PROT_READ|PROT_WRITE and MAP_SHARED, copies TEXT into the mapping, msyncs
// and unmaps it. On failure it prints the failing call and errno and exits
// 1; on a usage error it exits 2.
//
// testguest.Build compiles it (static, linux/arm64) and installs it in the
// stand-in guest as /usr/bin/armdev-mmap-write.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"unsafe"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// run writes args[1] to the file args[0] through a shared mapping and
// returns the exit status.
func run(args []string, stderr io.Writer) int {
	if len(args) != 2 || args[1] == "" {
		fmt.Fprintln(stderr, "usage: armdev-mmap-write FILE TEXT (TEXT not empty: an empty mapping is no test)")
		return 2
	}
	if err := mmapWrite(args[0], []byte(args[1])); err != nil {
		fmt.Fprintf(stderr, "armdev-mmap-write: %v\n", err)
		return 1
	}
	return 0
}

// callError is a failed system call on a file, with its errno.
type callError struct {
	call, file string
	errno      syscall.Errno
}

func (e *callError) Error() string {
	return fmt.Sprintf("%s %s: errno %d %s (%v)", e.call, e.file, int(e.errno), errnoName(e.errno), e.errno)
}

func fail(call, file string, err error) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return fmt.Errorf("%s %s: %w", call, file, err)
	}
	return &callError{call, file, errno}
}

// mmapWrite is the whole sequence; every step's failure names its call.
func mmapWrite(file string, text []byte) (err error) {
	fd, err := syscall.Open(file, syscall.O_RDWR|syscall.O_CREAT|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		return fail("open", file, err)
	}
	defer func() {
		if cerr := syscall.Close(fd); cerr != nil && err == nil {
			err = fail("close", file, cerr)
		}
	}()
	if err := syscall.Ftruncate(fd, int64(len(text))); err != nil {
		return fail("ftruncate", file, err)
	}
	mem, err := syscall.Mmap(fd, 0, len(text), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return fail("mmap(PROT_READ|PROT_WRITE, MAP_SHARED)", file, err)
	}
	copy(mem, text)
	if _, _, errno := syscall.Syscall(syscall.SYS_MSYNC, uintptr(unsafe.Pointer(&mem[0])), uintptr(len(mem)), syscall.MS_SYNC); errno != 0 {
		syscall.Munmap(mem)
		return fail("msync(MS_SYNC)", file, errno)
	}
	if err := syscall.Munmap(mem); err != nil {
		return fail("munmap", file, err)
	}
	return nil
}

// errnoName is the C name of the errnos these calls return.
func errnoName(e syscall.Errno) string {
	switch e {
	case syscall.EINVAL:
		return "EINVAL"
	case syscall.ENODEV:
		return "ENODEV"
	case syscall.EACCES:
		return "EACCES"
	case syscall.EPERM:
		return "EPERM"
	case syscall.ENOENT:
		return "ENOENT"
	case syscall.EISDIR:
		return "EISDIR"
	case syscall.EROFS:
		return "EROFS"
	case syscall.ENOSPC:
		return "ENOSPC"
	case syscall.EIO:
		return "EIO"
	case syscall.ENOMEM:
		return "ENOMEM"
	case syscall.EOPNOTSUPP:
		return "EOPNOTSUPP"
	case syscall.EBADF:
		return "EBADF"
	}
	return "E?"
}
