package fetch_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rsonpath/armdev/internal/fakehydra"
	"github.com/rsonpath/armdev/internal/fetch"
)

// diskFullDir names, in the re-executed test, the folder to mount a small
// tmpfs on.
const diskFullDir = "ARMDEV_TEST_DISK_FULL_DIR"

// A download that fills the disk says to free space, naming the folder. The
// test runs itself again in a user and mount namespace, where it may mount
// a 1 MiB tmpfs without privileges, and downloads a 3 MiB image into it.
func TestDownloadDiskFull(t *testing.T) {
	if dir := os.Getenv(diskFullDir); dir != "" {
		downloadIntoFullDisk(t, dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestDownloadDiskFull$", "-test.v")
	cmd.Env = append(os.Environ(), diskFullDir+"="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Skipf("cannot make a user namespace to fill a small file system in (%v)", err)
	}
	if strings.Contains(string(out), "SKIP") {
		t.Skipf("%s", out)
	}
	if err != nil {
		t.Fatalf("in a user namespace: %v\n%s", err, out)
	}
	t.Logf("in a user namespace:\n%s", out)
}

func downloadIntoFullDisk(t *testing.T, dir string) {
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a tmpfs in a user namespace: %v", err)
	}
	f := newFixture(t, fakehydra.Options{})
	f.dest = filepath.Join(dir, "downloads", imageName)
	err := f.download(t.Context(), fetch.DownloadOptions{})
	if err == nil {
		t.Fatal("a 3 MiB download into a 1 MiB file system succeeded")
	}
	t.Log(err)
	for _, w := range []string{imageName, "no space left", "free space in " + filepath.Dir(f.dest), "ARMDEV_STATE_DIR", "run again"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
	f.requireNoDest(t)
}
