package fetch

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The disk-full error is decided on the error alone, wherever it was
// wrapped; download_linux_test.go fills a real file system.
func TestNoSpaceSaysToFreeSpace(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "downloads")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	d := &downloader{lock: Lock{FileName: "x.img.zst", Size: 3 << 20}, dest: filepath.Join(dir, "x.img.zst")}
	d.part = d.dest + ".part"
	if err := os.WriteFile(d.part, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	cause := fmt.Errorf("download of x.img.zst stopped: %w", &fs.PathError{Op: "write", Path: d.part, Err: syscall.ENOSPC})
	msg := d.noSpace(cause).Error()
	for _, w := range []string{"x.img.zst", "no space left", "free space in " + dir, "1.0 MiB of 3.0 MiB kept in " + d.part, "run again"} {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q does not contain %q", msg, w)
		}
	}
}
