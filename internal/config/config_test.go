package config

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) Env {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDefaults(t *testing.T) {
	root := t.TempDir()
	c, err := Load(root, envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != filepath.Join(root, ".armdev") || c.Share != root {
		t.Errorf("state %q share %q", c.StateDir, c.Share)
	}
	if c.Release != DefaultRelease || c.HydraURL != DefaultHydraURL || c.SSHPort != 5022 {
		t.Errorf("release %q hydra %q port %d", c.Release, c.HydraURL, c.SSHPort)
	}
	if c.MemoryMiB < 1024 || c.MemoryMiB > 16384 || c.CPUs < 1 || c.DiskSize != 0 || !c.NixShell || c.Yes {
		t.Errorf("unexpected defaults: %+v", c)
	}
}

func TestOverrides(t *testing.T) {
	root := t.TempDir()
	c, err := Load(root, envOf(map[string]string{
		"ARMDEV_MEMORY": "8G", "ARMDEV_DISK_SIZE": "40", "ARMDEV_SSH_PORT": "6022",
		"ARMDEV_BOOT_TIMEOUT": "90", "ARMDEV_SHUTDOWN_TIMEOUT": "30s", "ARMDEV_YES": "1",
		"ARMDEV_ACCEL": "tcg", "ARMDEV_HYDRA_URL": "http://127.0.0.1:9/", "ARMDEV_SHARE": root,
		"ARMDEV_NIX_SHELL": "0", "ARMDEV_CPUS": "3",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.MemoryMiB != 8192 || c.DiskSize != 40<<30 || c.SSHPort != 6022 || c.CPUs != 3 {
		t.Errorf("sizes: %+v", c)
	}
	if c.BootTimeout != 90*time.Second || c.ShutdownTimeout != 30*time.Second || !c.Yes || c.NixShell {
		t.Errorf("flags: %+v", c)
	}
	if c.HydraURL != "http://127.0.0.1:9" || c.Accel != "tcg" {
		t.Errorf("hydra %q accel %q", c.HydraURL, c.Accel)
	}
}

func TestBadValues(t *testing.T) {
	cases := map[string]string{
		"ARMDEV_MEMORY":        "lots",
		"ARMDEV_SSH_PORT":      "70000",
		"ARMDEV_UBOOT":         "/no/such/u-boot.bin",
		"ARMDEV_CPUS":          "0",
		"ARMDEV_DISK_SIZE":     "-3G",
		"ARMDEV_ACCEL":         "whpx",
		"ARMDEV_BOOT_TIMEOUT":  "soon",
		"ARMDEV_YES":           "maybe",
		"ARMDEV_NIXOS_RELEASE": "22",
		"ARMDEV_HYDRA_URL":     "ftp://x",
		"ARMDEV_QEMU":          "/no/such/qemu",
	}
	for name, value := range cases {
		_, err := Load(t.TempDir(), envOf(map[string]string{name: value}))
		if err == nil {
			t.Errorf("%s=%s accepted", name, value)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, name) || !strings.Contains(msg, value) || !strings.Contains(msg, "expected") || strings.Contains(msg, "\n") {
			t.Errorf("%s=%s: unclear error %q", name, value, msg)
		}
	}
}
