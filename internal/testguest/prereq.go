package testguest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/rsonpath/armdev/internal/disk"
)

// tool is a program the test guest needs and the Debian package with it.
type tool struct{ cmd, pkg string }

// tools are what Build runs plus what booting the guest needs.
var tools = []tool{
	{"apt-get", "apt"},
	{"apt-cache", "apt"},
	{"dpkg", "dpkg"},
	{"cpio", "cpio"},
	{"gzip", "gzip"},
	{"mke2fs", "e2fsprogs"},
	{"debugfs", "e2fsprogs"},
	{"mkfs.vfat", "dosfstools"},
	{"sfdisk", "fdisk"},
	{"zstd", "zstd"},
	{"qemu-system-aarch64", "qemu-system-arm"},
	{"qemu-img", "qemu-utils"},
}

// Prerequisites reports what is missing to build and boot the test guest:
// nil when all is there, else an error with one line per missing piece,
// each saying which command installs it.
func Prerequisites() error {
	var missing []string
	for _, t := range tools {
		if _, err := disk.LookTool(t.cmd); err != nil {
			missing = append(missing, fmt.Sprintf("%s not found: apt-get install -y %s", t.cmd, t.pkg))
		}
	}
	if _, err := goCommand(); err != nil {
		missing = append(missing, "go not found: install Go (https://go.dev/dl/) or apt-get install -y golang-go")
	}
	if _, err := os.Stat(UBoot); err != nil {
		missing = append(missing, fmt.Sprintf("%s not found: apt-get install -y u-boot-qemu", UBoot))
	}
	if _, err := exec.LookPath("dpkg"); err == nil {
		if line := aptArm64(); line != "" {
			missing = append(missing, line)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return errors.New("test guest prerequisites missing:\n  " + strings.Join(missing, "\n  "))
}

// aptArm64 checks that apt knows arm64 packages; it returns the line to
// report, or "".
func aptArm64() string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	native, _ := output(ctx, "dpkg", "--print-architecture")
	foreign, _ := output(ctx, "dpkg", "--print-foreign-architectures")
	if strings.TrimSpace(native) != "arm64" && !strings.Contains(" "+strings.Join(strings.Fields(foreign), " ")+" ", " arm64 ") {
		return "dpkg architecture arm64 not enabled: dpkg --add-architecture arm64 && apt-get update"
	}
	policy, err := output(ctx, "apt-cache", "policy", "busybox-static:arm64")
	if err != nil || !strings.Contains(policy, "Candidate:") || strings.Contains(policy, "Candidate: (none)") {
		return "apt has no arm64 package lists: apt-get update"
	}
	return ""
}
