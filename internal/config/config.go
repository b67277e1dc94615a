// Package config builds armdev's one Config from defaults and ARMDEV_*
// environment variables, and validates it before any work starts.
package config

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// DefaultRelease is the NixOS release whose SD image is used when
// ARMDEV_NIXOS_RELEASE is not set: the newest stable release.
const DefaultRelease = "26.05"

// DefaultHydraURL is the Hydra instance the image is resolved against.
const DefaultHydraURL = "https://hydra.nixos.org"

// DefaultSSHPort is the host port forwarded to the guest's sshd, as in the
// original tool.
const DefaultSSHPort = 5022

// DefaultDiskGrowth is how much the working disk grows over the image when
// ARMDEV_DISK_SIZE is not set: 20 GiB, like the original.
const DefaultDiskGrowth = 20 << 30

// Config is everything armdev needs to know about one workspace.
type Config struct {
	// Root is the armdev checkout: where init/ and share/etc/nixos live.
	Root string
	// StateDir holds downloads, images, keys, sockets and logs (ARMDEV_STATE_DIR).
	StateDir string
	// Share is the project directory mounted at /rsonpath in the guest (ARMDEV_SHARE).
	Share string
	// NixOSConfig is the directory mounted at /etc/nixos (ARMDEV_NIXOS_CONFIG).
	NixOSConfig string
	// InitDir holds the files laid onto the image before first boot (ARMDEV_INIT_DIR).
	InitDir string
	// Release is the NixOS release, e.g. "26.05" (ARMDEV_NIXOS_RELEASE).
	Release string
	// HydraURL is the Hydra base URL (ARMDEV_HYDRA_URL).
	HydraURL string
	// UBoot is an explicit u-boot.bin; empty means find one (ARMDEV_UBOOT).
	UBoot string
	// CPUs is the guest's CPU count (ARMDEV_CPUS).
	CPUs int
	// MemoryMiB is the guest's memory in MiB (ARMDEV_MEMORY, e.g. 4G or 4096M).
	MemoryMiB int
	// DiskSize is the working disk's size in bytes; 0 means image + 20 GiB
	// (ARMDEV_DISK_SIZE, e.g. 40G).
	DiskSize int64
	// SSHPort is the 127.0.0.1 port forwarded to the guest's port 22 (ARMDEV_SSH_PORT).
	SSHPort int
	// Accel overrides the accelerator: kvm, hvf or tcg (ARMDEV_ACCEL).
	Accel string
	// CPU overrides QEMU's -cpu model (ARMDEV_CPU).
	CPU string
	// QEMU is the qemu-system-aarch64 binary (ARMDEV_QEMU).
	QEMU string
	// QEMUImg is the qemu-img binary (ARMDEV_QEMU_IMG).
	QEMUImg string
	// BootTimeout bounds the wait for SSH after starting (ARMDEV_BOOT_TIMEOUT).
	BootTimeout time.Duration
	// ShutdownTimeout bounds the wait for a graceful power-off (ARMDEV_SHUTDOWN_TIMEOUT).
	ShutdownTimeout time.Duration
	// Yes answers yes to destructive questions (ARMDEV_YES=1).
	Yes bool
	// GUI adds a display, virtio-gpu and USB keyboard/mouse (ARMDEV_GUI=1).
	GUI bool
	// NixShell makes arm-dev-ssh enter nix-shell when /rsonpath/shell.nix exists (ARMDEV_NIX_SHELL).
	NixShell bool
	// User is the guest account used after provisioning (ARMDEV_USER).
	User string
}

// Env looks up one environment variable; os.LookupEnv fits.
type Env func(string) (string, bool)

// Load builds the Config for the armdev checkout at root from env.
// The first bad value stops it with an error naming the variable, the value
// and what is accepted.
func Load(root string, env Env) (Config, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	p := parser{env: env}
	c := Config{Root: root}
	c.StateDir = p.path("ARMDEV_STATE_DIR", filepath.Join(root, ".armdev"), false)
	c.Share = p.path("ARMDEV_SHARE", root, true)
	c.NixOSConfig = p.path("ARMDEV_NIXOS_CONFIG", filepath.Join(root, "share", "etc", "nixos"), true)
	c.InitDir = p.path("ARMDEV_INIT_DIR", filepath.Join(root, "init"), true)
	c.Release = p.match("ARMDEV_NIXOS_RELEASE", DefaultRelease, releaseRE, "a release like 26.05 or unstable")
	c.HydraURL = strings.TrimRight(p.match("ARMDEV_HYDRA_URL", DefaultHydraURL, urlRE, "an http(s) URL like https://hydra.nixos.org"), "/")
	c.UBoot = p.path("ARMDEV_UBOOT", "", true)
	c.CPUs = p.intRange("ARMDEV_CPUS", runtime.NumCPU(), 1, 512)
	c.MemoryMiB = int(p.size("ARMDEV_MEMORY", defaultMemoryMiB()<<20, "M", 256<<20) >> 20)
	c.DiskSize = p.size("ARMDEV_DISK_SIZE", 0, "G", 1<<30)
	c.SSHPort = p.intRange("ARMDEV_SSH_PORT", DefaultSSHPort, 1, 65535)
	c.Accel = p.oneOf("ARMDEV_ACCEL", "", "kvm", "hvf", "tcg")
	c.CPU = p.match("ARMDEV_CPU", "", cpuRE, "a QEMU -cpu value like max or host")
	c.QEMU = p.command("ARMDEV_QEMU", "qemu-system-aarch64")
	c.QEMUImg = p.command("ARMDEV_QEMU_IMG", "qemu-img")
	c.BootTimeout = p.duration("ARMDEV_BOOT_TIMEOUT", 10*time.Minute)
	c.ShutdownTimeout = p.duration("ARMDEV_SHUTDOWN_TIMEOUT", 2*time.Minute)
	c.Yes = p.boolean("ARMDEV_YES", false)
	c.GUI = p.boolean("ARMDEV_GUI", false)
	c.NixShell = p.boolean("ARMDEV_NIX_SHELL", true)
	c.User = p.match("ARMDEV_USER", "armdev", userRE, "a lower-case user name")
	if p.err != nil {
		return Config{}, p.err
	}
	return c, nil
}

// defaultMemoryMiB is half the host's memory, between 1 GiB and 16 GiB (the
// original's fixed size); 4 GiB when the host's memory cannot be read.
func defaultMemoryMiB() int64 {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 4096
	}
	var kib int64
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kib, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	if kib == 0 {
		return 4096
	}
	return min(max(kib/1024/2, 1024), 16384)
}

var (
	releaseRE = regexp.MustCompile(`^([0-9]{2}\.[0-9]{2}|unstable)$`)
	urlRE     = regexp.MustCompile(`^https?://[^\s]+$`)
	cpuRE     = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.,=-]*$`)
	userRE    = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,30}$`)
	sizeRE    = regexp.MustCompile(`^([0-9]+)([KMGT]?)(i?B)?$`)
)

// parser reads variables and keeps the first error.
type parser struct {
	env Env
	err error
}

func (p *parser) get(name string) (string, bool) {
	if p.err != nil {
		return "", false
	}
	v, ok := p.env(name)
	if !ok || v == "" {
		return "", false
	}
	return v, true
}

func (p *parser) fail(name, value, accepted string) {
	p.err = fmt.Errorf("%s=%q is not valid: expected %s", name, value, accepted)
}

func (p *parser) path(name, def string, mustExist bool) string {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	abs, err := filepath.Abs(v)
	if err != nil {
		p.fail(name, v, "a path")
		return ""
	}
	if mustExist {
		if _, err := os.Stat(abs); err != nil {
			p.fail(name, v, "an existing path")
			return ""
		}
	}
	return abs
}

func (p *parser) match(name, def string, re *regexp.Regexp, accepted string) string {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	if !re.MatchString(v) {
		p.fail(name, v, accepted)
		return ""
	}
	return v
}

func (p *parser) intRange(name string, def, lo, hi int) int {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		p.fail(name, v, fmt.Sprintf("a whole number from %d to %d", lo, hi))
		return 0
	}
	return n
}

// size parses 4096M, 4G, 20GiB, or a bare number in unit defUnit.
func (p *parser) size(name string, def int64, defUnit string, min int64) int64 {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	m := sizeRE.FindStringSubmatch(strings.ToUpper(strings.TrimSpace(v)))
	accepted := fmt.Sprintf("a size like 4096M or 8G (at least %dM; a bare number means %s)", min>>20, defUnit)
	if m == nil {
		p.fail(name, v, accepted)
		return 0
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	unit := m[2]
	if unit == "" && m[3] == "" {
		unit = defUnit
	}
	shift := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[unit]
	if err != nil || n <= 0 || n > (1<<62)>>shift || n<<shift < min {
		p.fail(name, v, accepted)
		return 0
	}
	return n << shift
}

func (p *parser) oneOf(name, def string, allowed ...string) string {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	p.fail(name, v, "one of "+strings.Join(allowed, ", "))
	return ""
}

func (p *parser) duration(name string, def time.Duration) time.Duration {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		if n, nerr := strconv.Atoi(v); nerr == nil {
			d, err = time.Duration(n)*time.Second, nil
		}
	}
	if err != nil || d <= 0 {
		p.fail(name, v, "a positive duration like 90s or 5m (a bare number means seconds)")
		return 0
	}
	return d
}

func (p *parser) boolean(name string, def bool) bool {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	switch strings.ToLower(v) {
	case "1", "true", "yes", "y", "on":
		return true
	case "0", "false", "no", "n", "off":
		return false
	}
	p.fail(name, v, "1 or 0 (also yes/no, true/false)")
	return false
}

// command resolves a program name on PATH, or checks an explicit path.
func (p *parser) command(name, def string) string {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	if strings.ContainsRune(v, filepath.Separator) {
		if st, err := os.Stat(v); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			p.fail(name, v, "an executable file or a program name on PATH")
			return ""
		}
		abs, _ := filepath.Abs(v)
		return abs
	}
	return v
}
