package config

import (
	"os"
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

// posing is a host with 8 GiB, run by an ordinary user, in folder wd.
func posing(wd string) host {
	return host{memory: 8 << 30, euid: 1000, unprivilegedPortStart: 1024, wd: wd}
}

// loadAs loads with env on host h and returns the config or the error's text.
func loadAs(t *testing.T, h host, env map[string]string) (Config, string) {
	t.Helper()
	c, err := load(t.TempDir(), envOf(env), h)
	if err != nil {
		msg := err.Error()
		if strings.Contains(msg, "\n") || !strings.Contains(msg, "is not valid: expected") {
			t.Errorf("%v: error is not the usual one line: %q", env, msg)
		}
		return c, msg
	}
	return c, ""
}

func TestDurationsAreBounded(t *testing.T) {
	h := posing(t.TempDir())
	for _, tc := range []struct {
		name, value string
		want        time.Duration // 0: refused
	}{
		{"ARMDEV_BOOT_TIMEOUT", "18446744074", 0}, // wrapped to 290 ms before
		{"ARMDEV_BOOT_TIMEOUT", "9223372037", 0},
		{"ARMDEV_BOOT_TIMEOUT", "99999999999999999999", 0},
		{"ARMDEV_BOOT_TIMEOUT", "2562047h", 0},
		{"ARMDEV_BOOT_TIMEOUT", "25h", 0},
		{"ARMDEV_BOOT_TIMEOUT", "500ms", 0},
		{"ARMDEV_BOOT_TIMEOUT", "0", 0},
		{"ARMDEV_BOOT_TIMEOUT", "-5", 0},
		{"ARMDEV_BOOT_TIMEOUT", "86400", 24 * time.Hour},
		{"ARMDEV_BOOT_TIMEOUT", "1", time.Second},
		{"ARMDEV_BOOT_TIMEOUT", "90m", 90 * time.Minute},
		{"ARMDEV_SHUTDOWN_TIMEOUT", "2h", 0},
		{"ARMDEV_SHUTDOWN_TIMEOUT", "3601", 0},
		{"ARMDEV_SHUTDOWN_TIMEOUT", "3600", time.Hour},
		{"ARMDEV_SHUTDOWN_TIMEOUT", "45s", 45 * time.Second},
	} {
		c, msg := loadAs(t, h, map[string]string{tc.name: tc.value})
		got := c.BootTimeout
		if tc.name == "ARMDEV_SHUTDOWN_TIMEOUT" {
			got = c.ShutdownTimeout
		}
		switch {
		case tc.want == 0 && msg == "":
			t.Errorf("%s=%s accepted as %v", tc.name, tc.value, got)
		case tc.want == 0 && !strings.Contains(msg, "from 1s to"):
			t.Errorf("%s=%s: error %q does not say the bounds", tc.name, tc.value, msg)
		case tc.want != 0 && (msg != "" || got != tc.want):
			t.Errorf("%s=%s: %v, %q; want %v", tc.name, tc.value, got, msg, tc.want)
		}
	}
	if _, msg := loadAs(t, h, map[string]string{"ARMDEV_BOOT_TIMEOUT": "25h"}); !strings.Contains(msg, "from 1s to 24h") {
		t.Errorf("boot timeout bounds: %q", msg)
	}
	if _, msg := loadAs(t, h, map[string]string{"ARMDEV_SHUTDOWN_TIMEOUT": "2h"}); !strings.Contains(msg, "from 1s to 1h") {
		t.Errorf("shutdown timeout bounds: %q", msg)
	}
}

func TestMemoryIsCappedAtTheHosts(t *testing.T) {
	h := posing(t.TempDir()) // 8 GiB
	for value, want := range map[string]int{
		"1T":                   0,
		"4294967296M":          0,
		"9G":                   0,
		"8193M":                0,
		"99999999999999999999": 0,
		"8796093022208M":       0, // 2^63 bytes
		"255M":                 0,
		"8G":                   8192,
		"8GiB":                 8192,
		"4096":                 4096,
		"2097152K":             2048,
	} {
		c, msg := loadAs(t, h, map[string]string{"ARMDEV_MEMORY": value})
		switch {
		case want == 0 && msg == "":
			t.Errorf("ARMDEV_MEMORY=%s accepted as %d MiB on an 8 GiB host", value, c.MemoryMiB)
		case want == 0 && !strings.Contains(msg, "at most 8G (this host's memory)"):
			t.Errorf("ARMDEV_MEMORY=%s: error %q does not say the cap", value, msg)
		case want != 0 && (msg != "" || c.MemoryMiB != want):
			t.Errorf("ARMDEV_MEMORY=%s: %d MiB, %q; want %d MiB", value, c.MemoryMiB, msg, want)
		}
	}
	// A host whose memory is unknown has no cap, but sizes still cannot
	// overflow.
	h.memory = 0
	if c, msg := loadAs(t, h, map[string]string{"ARMDEV_MEMORY": "1T"}); msg != "" || c.MemoryMiB != 1<<20 {
		t.Errorf("ARMDEV_MEMORY=1T with unknown host memory: %d MiB, %q", c.MemoryMiB, msg)
	}
	if _, msg := loadAs(t, h, map[string]string{"ARMDEV_MEMORY": "8796093022208M"}); msg == "" {
		t.Error("ARMDEV_MEMORY=8796093022208M (2^63 bytes) accepted")
	}
	// The default stays within what the host has.
	h.memory = 6 << 30
	if c, _ := loadAs(t, h, nil); c.MemoryMiB != 3072 {
		t.Errorf("default memory on a 6 GiB host: %d MiB, want 3072", c.MemoryMiB)
	}
}

func TestDiskSizeIsBounded(t *testing.T) {
	h := posing(t.TempDir())
	for value, want := range map[string]int64{
		"4194304T": 0,
		"3T":       0,
		"2049G":    0,
		"512M":     0,
		"2T":       2 << 40,
		"2048":     2 << 40,
		"40G":      40 << 30,
	} {
		c, msg := loadAs(t, h, map[string]string{"ARMDEV_DISK_SIZE": value})
		switch {
		case want == 0 && msg == "":
			t.Errorf("ARMDEV_DISK_SIZE=%s accepted as %d bytes", value, c.DiskSize)
		case want == 0 && !strings.Contains(msg, "at most 2T"):
			t.Errorf("ARMDEV_DISK_SIZE=%s: error %q does not say the limit", value, msg)
		case want != 0 && (msg != "" || c.DiskSize != want):
			t.Errorf("ARMDEV_DISK_SIZE=%s: %d, %q; want %d", value, c.DiskSize, msg, want)
		}
	}
}

func TestHydraURL(t *testing.T) {
	h := posing(t.TempDir())
	for value, want := range map[string]string{
		"http:///":                         "",
		"http://":                          "",
		"http://:8080":                     "",
		"https://hydra.example?x=1":        "",
		"https://hydra.example/?":          "",
		"https://hydra.example/#top":       "",
		"https://hydra.example#":           "",
		"https://user:pw@hydra.example":    "",
		"https://hydra.example:99999":      "",
		"https://hydra.example:http":       "",
		"ftp://hydra.example":              "",
		"hydra.example":                    "",
		"https:hydra.example":              "",
		"https://hydra.example":            "https://hydra.example",
		"https://hydra.example/":           "https://hydra.example",
		"http://127.0.0.1:9//":             "http://127.0.0.1:9",
		"http://[::1]:8080/hydra/":         "http://[::1]:8080/hydra",
		"HTTPS://hydra.example/a%20b/":     "https://hydra.example/a%20b",
		"https://hydra.example/nix/hydra/": "https://hydra.example/nix/hydra",
	} {
		c, msg := loadAs(t, h, map[string]string{"ARMDEV_HYDRA_URL": value})
		switch {
		case want == "" && msg == "":
			t.Errorf("ARMDEV_HYDRA_URL=%s accepted as %q", value, c.HydraURL)
		case want != "" && (msg != "" || c.HydraURL != want):
			t.Errorf("ARMDEV_HYDRA_URL=%s: %q, %q; want %q", value, c.HydraURL, msg, want)
		}
	}
}

func TestPathSettingsNameTheRightKind(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := posing(dir)
	for name, value := range map[string]string{
		"ARMDEV_SHARE":        file,
		"ARMDEV_NIXOS_CONFIG": file,
		"ARMDEV_INIT_DIR":     file,
		"ARMDEV_STATE_DIR":    file,
		"ARMDEV_UBOOT":        dir,
		"ARMDEV_QEMU":         dir,
	} {
		if _, msg := loadAs(t, h, map[string]string{name: value}); msg == "" || !strings.Contains(msg, name) {
			t.Errorf("%s=%s accepted (%q)", name, value, msg)
		}
	}
	// A state folder that does not exist yet is made later.
	missing := filepath.Join(dir, "new-state")
	if c, msg := loadAs(t, h, map[string]string{"ARMDEV_STATE_DIR": missing}); msg != "" || c.StateDir != missing {
		t.Errorf("a missing ARMDEV_STATE_DIR: %q, %q", c.StateDir, msg)
	}
}

func TestRelativePathsStartAtTheCallersFolder(t *testing.T) {
	caller := t.TempDir()
	elsewhere := t.TempDir()
	for _, d := range []string{"project", "bin"} {
		if err := os.Mkdir(filepath.Join(caller, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []struct {
		name string
		mode os.FileMode
	}{{"u-boot.bin", 0o644}, {"bin/qemu", 0o755}} {
		if err := os.WriteFile(filepath.Join(caller, f.name), []byte("x"), f.mode); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{
		"ARMDEV_STATE_DIR": "state", "ARMDEV_SHARE": "project", "ARMDEV_NIXOS_CONFIG": ".",
		"ARMDEV_INIT_DIR": "project/../bin", "ARMDEV_UBOOT": "u-boot.bin", "ARMDEV_QEMU": "./bin/qemu",
	}
	check := func(c Config) {
		t.Helper()
		for got, want := range map[string]string{
			c.CallerDir: caller, c.StateDir: filepath.Join(caller, "state"), c.Share: filepath.Join(caller, "project"),
			c.NixOSConfig: caller, c.InitDir: filepath.Join(caller, "bin"), c.UBoot: filepath.Join(caller, "u-boot.bin"),
			c.QEMU: filepath.Join(caller, "bin", "qemu"),
		} {
			if got != want {
				t.Errorf("resolved %q, want %q", got, want)
			}
		}
	}

	// From the justfile: ARMDEV_CALLER_DIR names the caller's folder, while
	// the process runs in the armdev checkout.
	env["ARMDEV_CALLER_DIR"] = caller
	c, msg := loadAs(t, posing(elsewhere), env)
	if msg != "" {
		t.Fatal(msg)
	}
	check(c)

	// Without it (go run mage.go), the working folder is the caller's.
	delete(env, "ARMDEV_CALLER_DIR")
	c, msg = loadAs(t, posing(caller), env)
	if msg != "" {
		t.Fatal(msg)
	}
	check(c)

	for _, bad := range []string{"relative/dir", filepath.Join(caller, "u-boot.bin"), filepath.Join(caller, "missing")} {
		if _, msg := loadAs(t, posing(elsewhere), map[string]string{"ARMDEV_CALLER_DIR": bad}); !strings.Contains(msg, "ARMDEV_CALLER_DIR") {
			t.Errorf("ARMDEV_CALLER_DIR=%s: %q", bad, msg)
		}
	}
}

func TestPrivilegedPortsNeedRoot(t *testing.T) {
	user := posing(t.TempDir())
	_, msg := loadAs(t, user, map[string]string{"ARMDEV_SSH_PORT": "22"})
	if !strings.Contains(msg, "from 1024 to 65535") || !strings.Contains(msg, "root") {
		t.Errorf("port 22 as a user: %q", msg)
	}
	if c, msg := loadAs(t, user, map[string]string{"ARMDEV_SSH_PORT": "1024"}); msg != "" || c.SSHPort != 1024 {
		t.Errorf("port 1024 as a user: %d, %q", c.SSHPort, msg)
	}
	// Where the host lets users bind lower ports (Linux's
	// net.ipv4.ip_unprivileged_port_start), so does armdev.
	lowered := user
	lowered.unprivilegedPortStart = 80
	if c, msg := loadAs(t, lowered, map[string]string{"ARMDEV_SSH_PORT": "80"}); msg != "" || c.SSHPort != 80 {
		t.Errorf("port 80 with ip_unprivileged_port_start=80: %d, %q", c.SSHPort, msg)
	}
	if _, msg := loadAs(t, lowered, map[string]string{"ARMDEV_SSH_PORT": "79"}); msg == "" {
		t.Error("port 79 with ip_unprivileged_port_start=80 accepted")
	}
	root := user
	root.euid = 0
	if c, msg := loadAs(t, root, map[string]string{"ARMDEV_SSH_PORT": "22"}); msg != "" || c.SSHPort != 22 {
		t.Errorf("port 22 as root: %d, %q", c.SSHPort, msg)
	}
}

// ARMDEV_USER reaches the guest's configuration: names NixOS refuses, or
// declares itself, stop before any work.
func TestUserName(t *testing.T) {
	h := posing(t.TempDir())
	for _, bad := range []string{"root", "nobody", "nixbld3", "sshd", "nixos", "Has Space", "-x", "..", strings.Repeat("a", 32)} {
		if _, msg := loadAs(t, h, map[string]string{"ARMDEV_USER": bad}); !strings.HasPrefix(msg, `ARMDEV_USER="`+bad+`" is not valid: `) {
			t.Errorf("ARMDEV_USER=%q: %q, want it refused in one line", bad, msg)
		}
	}
	for _, good := range []string{"dev", "rs_dev", "a.b"} {
		if c, msg := loadAs(t, h, map[string]string{"ARMDEV_USER": good}); msg != "" || c.User != good {
			t.Errorf("ARMDEV_USER=%q: user %q, %q", good, c.User, msg)
		}
	}
	if c, msg := loadAs(t, h, nil); msg != "" || c.User != "armdev" {
		t.Errorf("default user %q, %q", c.User, msg)
	}
}
