package workspace

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/rsonpath/armdev/internal/fetch"
	"github.com/rsonpath/armdev/internal/instance"
	"github.com/rsonpath/armdev/internal/testutil"
)

const debianUBoot = fetch.DebianUBootPath

// stuckGuest is a workspace whose "provisioned" disk is empty: real QEMU
// and u-boot start, but nothing ever answers SSH.
func stuckGuest(t *testing.T) (*fixture, *Workspace) {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-aarch64"); err != nil {
		t.Skip("qemu-system-aarch64 not available")
	}
	if _, err := os.Stat(debianUBoot); err != nil {
		t.Skip("u-boot-qemu not installed")
	}
	f := &fixture{t: t, root: t.TempDir()}
	port := testutil.Port(t)
	f.write("share/etc/nixos/configuration.nix", "{ ... }: { }\n", 0o644)
	f.write("init/.keep", "", 0o644)
	f.env = map[string]string{
		"ARMDEV_UBOOT": debianUBoot, "ARMDEV_SSH_PORT": fmt.Sprint(port), "ARMDEV_BOOT_TIMEOUT": "4s",
		"ARMDEV_MEMORY": "256M", "ARMDEV_CPUS": "1", "ARMDEV_SHUTDOWN_TIMEOUT": "2s",
	}
	w := f.workspace()
	if err := os.MkdirAll(w.Cfg.StateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", w.l.Disk(), "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v %s", err, out)
	}
	if err := w.l.SaveDisk(instance.DiskMeta{Provisioned: true, Release: "26.05", BuildID: 7, Image: "test.img.zst"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.workspace().Kill(context.Background()) })
	return f, w
}

func TestStartTimeoutStatusKill(t *testing.T) {
	f, w := stuckGuest(t)
	ctx := t.Context()

	err := w.Start(ctx)
	if err == nil {
		t.Fatal("start of a guest that never answers succeeded")
	}
	msg := err.Error()
	if log, _ := os.ReadFile(w.l.SerialLog()); !strings.Contains(string(log), "U-Boot") {
		t.Errorf("the serial log did not catch u-boot's banner:\n%s", log)
	}
	for _, want := range []string{"not ready over SSH after 4", "(ARMDEV_BOOT_TIMEOUT=4s)", "still running", "last lines of " + w.l.SerialLog() + ":\n  "} {
		if !strings.Contains(msg, want) {
			t.Errorf("timeout error lacks %q:\n%s", want, msg)
		}
	}
	st, err := w.vm().Status()
	if err != nil || !st.Running {
		t.Fatalf("after the timeout the guest should still run: %+v %v", st, err)
	}

	f.out.Reset()
	if err := f.workspace().Status(ctx); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{fmt.Sprintf("running (pid %d)", st.PID), "127.0.0.1:" + f.env["ARMDEV_SSH_PORT"], "tcg", "Hydra build 7"} {
		if !strings.Contains(f.out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, f.out.String())
		}
	}

	f.out.Reset()
	if err := f.workspace().Start(ctx); err != nil || !strings.Contains(f.out.String(), "already running") {
		t.Errorf("starting a running guest: %v %s", err, f.out.String())
	}

	// shutdown: no SSH, the power button reaches u-boot nothing, quit works.
	f.out.Reset()
	if err := f.workspace().Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"SSH unavailable", "system_powerdown", "quit", "the guest is off"} {
		if !strings.Contains(f.out.String(), want) {
			t.Errorf("shutdown did not report %q:\n%s", want, f.out.String())
		}
	}
	if syscall.Kill(st.PID, 0) == nil {
		t.Errorf("QEMU %d still alive after shutdown", st.PID)
	}
	if _, err := os.Stat(w.l.PIDFile()); !os.IsNotExist(err) {
		t.Errorf("pid file left: %v", err)
	}
}

func TestStartRefusesATakenPort(t *testing.T) {
	f, w := stuckGuest(t)
	l, err := net.Listen("tcp", "127.0.0.1:"+f.env["ARMDEV_SSH_PORT"])
	if err != nil {
		t.Skipf("port went away: %v", err)
	}
	defer l.Close()
	err = w.Start(t.Context())
	want := fmt.Sprintf("SSH port %s on 127.0.0.1 is in use: set ARMDEV_SSH_PORT to a free port", f.env["ARMDEV_SSH_PORT"])
	if err == nil || err.Error() != want {
		t.Errorf("start on a taken port: %v", err)
	}
	if st, _ := w.vm().Status(); st.Running {
		t.Errorf("QEMU started anyway")
	}
}

func TestMissingQEMUIsOneClearLine(t *testing.T) {
	f, _ := stuckGuest(t)
	f.env["ARMDEV_QEMU"] = "qemu-system-aarch64-missing"
	err := f.workspace().Start(t.Context())
	if err == nil || !strings.Contains(err.Error(), "qemu-system-aarch64-missing was not found on PATH: install") || strings.Contains(err.Error(), "\n") {
		t.Errorf("missing qemu: %v", err)
	}
}
