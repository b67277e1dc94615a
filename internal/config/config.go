// Package config builds armdev's one Config from defaults and ARMDEV_*
// environment variables, and validates it before any work starts.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/rsonpath/armdev/internal/guestuser"
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
	// CallerDir is the folder the user ran armdev from, against which
	// relative paths in settings are resolved: ARMDEV_CALLER_DIR, which the
	// justfile sets from invocation_directory() because .just-run changes
	// into the armdev checkout; else the process's working folder.
	CallerDir string
}

// Env looks up one environment variable; os.LookupEnv fits.
type Env func(string) (string, bool)

// Limits of the settings that have no natural ones. Each is said in the
// error that refuses a value beyond it.
const (
	minMemory = 256 << 20
	minDisk   = 1 << 30
	// maxDisk is 2 TiB: the NixOS SD image has an MBR partition table, whose
	// 32-bit sector fields cannot describe a partition beyond 2 TiB, so the
	// guest could never use more. (qcow2 itself, with its default 64 KiB
	// clusters, stops at 2 PiB.)
	maxDisk                      = 2 << 40
	minBootTimeout               = time.Second
	maxBootTimeout               = 24 * time.Hour
	minShutdownTimeout           = time.Second
	maxShutdownTimeout           = time.Hour
	defaultUnprivilegedPortStart = 1024
)

// Load builds the Config for the armdev checkout at root from env.
// The first bad value stops it with an error naming the variable, the value
// and what is accepted.
func Load(root string, env Env) (Config, error) {
	return load(root, env, thisHost())
}

// host is what Load needs to know about the machine it runs on, gathered
// once so that tests can pose as another machine.
type host struct {
	// memory is the host's memory in bytes; 0 when unknown (then there is
	// no cap).
	memory int64
	// euid is the effective user id; -1 when unknown.
	euid int
	// unprivilegedPortStart is the lowest port a user other than root may
	// bind.
	unprivilegedPortStart int
	// wd is the process's working folder and wdErr why it is unknown.
	wd    string
	wdErr error
}

func thisHost() host {
	wd, err := os.Getwd()
	return host{
		memory:                hostMemory(),
		euid:                  os.Geteuid(),
		unprivilegedPortStart: unprivilegedPortStart(),
		wd:                    wd,
		wdErr:                 err,
	}
}

func load(root string, env Env, h host) (Config, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	p := parser{env: env}
	c := Config{Root: root}
	c.CallerDir = p.callerDir("ARMDEV_CALLER_DIR", h)
	p.caller = c.CallerDir
	c.StateDir = p.path("ARMDEV_STATE_DIR", filepath.Join(root, ".armdev"), folderIfExists)
	c.Share = p.path("ARMDEV_SHARE", root, folder)
	c.NixOSConfig = p.path("ARMDEV_NIXOS_CONFIG", filepath.Join(root, "share", "etc", "nixos"), folder)
	c.InitDir = p.path("ARMDEV_INIT_DIR", filepath.Join(root, "init"), folder)
	c.Release = p.match("ARMDEV_NIXOS_RELEASE", DefaultRelease, releaseRE, "a release like 26.05 or unstable")
	c.HydraURL = p.hydraURL("ARMDEV_HYDRA_URL", DefaultHydraURL)
	c.UBoot = p.path("ARMDEV_UBOOT", "", regularFile)
	c.CPUs = p.intRange("ARMDEV_CPUS", runtime.NumCPU(), 1, 512)
	// The guest gets whole MiB, so the cap is the host's memory in whole MiB.
	c.MemoryMiB = int(p.size("ARMDEV_MEMORY", defaultMemoryMiB(h.memory)<<20, "4096M or 8G", "M", minMemory, h.memory>>20<<20, "this host's memory") >> 20)
	c.DiskSize = p.size("ARMDEV_DISK_SIZE", 0, "40G", "G", minDisk, maxDisk, "what the image's MBR partition table can use")
	c.SSHPort = p.port("ARMDEV_SSH_PORT", DefaultSSHPort, h)
	c.Accel = p.oneOf("ARMDEV_ACCEL", "", "kvm", "hvf", "tcg")
	c.CPU = p.match("ARMDEV_CPU", "", cpuRE, "a QEMU -cpu value like max or host")
	c.QEMU = p.command("ARMDEV_QEMU", "qemu-system-aarch64")
	c.QEMUImg = p.command("ARMDEV_QEMU_IMG", "qemu-img")
	c.BootTimeout = p.duration("ARMDEV_BOOT_TIMEOUT", 10*time.Minute, minBootTimeout, maxBootTimeout)
	c.ShutdownTimeout = p.duration("ARMDEV_SHUTDOWN_TIMEOUT", 2*time.Minute, minShutdownTimeout, maxShutdownTimeout)
	c.Yes = p.boolean("ARMDEV_YES", false)
	c.GUI = p.boolean("ARMDEV_GUI", false)
	c.NixShell = p.boolean("ARMDEV_NIX_SHELL", true)
	c.User = p.userName("ARMDEV_USER", guestuser.DefaultUser)
	if p.err != nil {
		return Config{}, p.err
	}
	return c, nil
}

// defaultMemoryMiB is half the host's memory (given in bytes), between
// 1 GiB and 16 GiB (the original's fixed size); 4 GiB when the host's
// memory is unknown.
func defaultMemoryMiB(memory int64) int64 {
	if memory <= 0 {
		return 4096
	}
	return min(max(memory>>20/2, 1024), 16384)
}

// hostMemory is the host's memory in bytes: MemTotal on Linux, hw.memsize
// on macOS; 0 when it cannot be read.
func hostMemory() int64 {
	if runtime.GOOS == "darwin" {
		out, err := exec.Command("sysctl", "-n", "hw.memsize").Output()
		if err != nil {
			return 0
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
		return max(n, 0)
	}
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kib, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil || kib <= 0 || kib > math.MaxInt64>>10 {
				return 0
			}
			return kib << 10
		}
	}
	return 0
}

// unprivilegedPortStart is the lowest port users other than root may bind:
// Linux makes it a setting; elsewhere, as on macOS for a single address
// such as 127.0.0.1, it is 1024.
func unprivilegedPortStart() int {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		return defaultUnprivilegedPortStart
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || n < 0 {
		return defaultUnprivilegedPortStart
	}
	return n
}

var (
	releaseRE = regexp.MustCompile(`^([0-9]{2}\.[0-9]{2}|unstable)$`)
	cpuRE     = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.,=-]*$`)
	sizeRE    = regexp.MustCompile(`^([0-9]+)([KMGT]?)(I?B)?$`)
)

// parser reads variables and keeps the first error.
type parser struct {
	env Env
	err error
	// caller is the folder relative paths start from; "" when unknown.
	caller string
	// callerErr says why caller is unknown.
	callerErr error
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

// callerDir is ARMDEV_CALLER_DIR, else the working folder.
func (p *parser) callerDir(name string, h host) string {
	v, ok := p.get(name)
	if !ok {
		p.callerErr = h.wdErr
		return h.wd
	}
	if !filepath.IsAbs(v) {
		p.fail(name, v, "the absolute path of a folder (the justfile sets it to invocation_directory())")
		return ""
	}
	if fi, err := os.Stat(v); err != nil || !fi.IsDir() {
		p.fail(name, v, "an existing folder (the justfile sets it to invocation_directory())")
		return ""
	}
	return filepath.Clean(v)
}

// resolve makes v absolute, starting from the caller's folder.
func (p *parser) resolve(name, v string) (string, bool) {
	if filepath.IsAbs(v) {
		return filepath.Clean(v), true
	}
	if p.caller == "" {
		p.fail(name, v, fmt.Sprintf("an absolute path (the working folder is unknown: %v)", p.callerErr))
		return "", false
	}
	return filepath.Join(p.caller, v), true
}

// pathKind is what a path setting must name.
type pathKind int

const (
	// folderIfExists may be missing (armdev creates it) but not a file.
	folderIfExists pathKind = iota
	// folder must be an existing folder.
	folder
	// regularFile must be an existing regular file.
	regularFile
)

// path reads a path setting, resolves it against the caller's folder and
// checks that it names what kind says.
func (p *parser) path(name, def string, kind pathKind) string {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	abs, ok := p.resolve(name, v)
	if !ok {
		return ""
	}
	fi, err := os.Stat(abs)
	if kind == regularFile {
		switch {
		case err != nil:
			p.fail(name, v, fmt.Sprintf("an existing file (%s: %v)", abs, unwrapPathError(err)))
		case !fi.Mode().IsRegular():
			p.fail(name, v, fmt.Sprintf("a file (%s is not a regular file)", abs))
		}
		return abs
	}
	switch {
	case kind == folderIfExists && errors.Is(err, fs.ErrNotExist):
	case err != nil:
		p.fail(name, v, fmt.Sprintf("a folder (%s: %v)", abs, unwrapPathError(err)))
	case !fi.IsDir():
		p.fail(name, v, fmt.Sprintf("a folder (%s is not a folder)", abs))
	}
	return abs
}

// unwrapPathError drops the path an os error repeats, which the message
// already names.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
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

// userName accepts a guest user name that NixOS takes and does not declare
// itself (see guestuser.ValidName).
func (p *parser) userName(name, def string) string {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	if err := guestuser.ValidName(v); err != nil {
		p.err = fmt.Errorf("%s=%q is not valid: expected a name the guest user can have; %v", name, v, err)
		return ""
	}
	return v
}

// hydraURL accepts an http(s) URL made of a host, an optional port and an
// optional path, and drops trailing slashes: paths are appended to it, so a
// query or fragment would swallow them and user info would leak into logs.
func (p *parser) hydraURL(name, def string) string {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	const accepted = "an http(s) URL of a host with an optional port and path, like https://hydra.nixos.org (no user, query or fragment)"
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Opaque != "" || u.Hostname() == "" ||
		u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.ContainsAny(v, "?# \t\r\n") {
		p.fail(name, v, accepted)
		return ""
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			p.fail(name, v, accepted)
			return ""
		}
	}
	return u.Scheme + "://" + u.Host + strings.TrimRight(u.EscapedPath(), "/")
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

// port reads a TCP port on 127.0.0.1, refusing one that only root may bind
// when armdev does not run as root: QEMU would fail on it only at start.
func (p *parser) port(name string, def int, h host) int {
	lo := 1
	if h.euid != 0 {
		lo = max(h.unprivilegedPortStart, 1)
	}
	v, ok := p.get(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	switch {
	case err != nil || n < 1 || n > 65535:
		p.fail(name, v, fmt.Sprintf("a port from %d to 65535", lo))
	case n < lo:
		p.fail(name, v, fmt.Sprintf("a port from %d to 65535 (binding a lower port needs root, and armdev runs QEMU as you)", lo))
	default:
		return n
	}
	return 0
}

// size parses 4096M, 4G, 20GiB, or a bare number in unit defUnit, and
// checks lo <= size <= hi (hi <= 0: no upper limit; hiWhat says what hi
// is). No step can overflow.
func (p *parser) size(name string, def int64, example, defUnit string, lo, hi int64, hiWhat string) int64 {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	accepted := fmt.Sprintf("a size like %s, at least %s", example, sizeString(lo))
	if hi > 0 {
		accepted += fmt.Sprintf(" and at most %s (%s)", sizeString(hi), hiWhat)
	}
	accepted += "; a bare number means " + defUnit
	m := sizeRE.FindStringSubmatch(strings.ToUpper(strings.TrimSpace(v)))
	if m == nil {
		p.fail(name, v, accepted)
		return 0
	}
	unit := m[2]
	if unit == "" && m[3] == "" {
		unit = defUnit
	}
	shift := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[unit]
	n, err := strconv.ParseInt(m[1], 10, 64) // fails beyond MaxInt64
	if err != nil || n > math.MaxInt64>>shift {
		p.fail(name, v, accepted)
		return 0
	}
	if b := n << shift; b >= lo && (hi <= 0 || b <= hi) {
		return b
	}
	p.fail(name, v, accepted)
	return 0
}

// sizeString writes a byte count in the largest unit that divides it, as
// the settings are written: 256M, 2T, 24105M.
func sizeString(b int64) string {
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"T", 40}, {"G", 30}, {"M", 20}, {"K", 10}} {
		if b >= 1<<u.shift && b%(1<<u.shift) == 0 {
			return strconv.FormatInt(b>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(b, 10) + "B"
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

// duration parses 90s, 5m or a bare number of seconds and checks
// lo <= d <= hi; the bound is checked before seconds are multiplied, so a
// huge number cannot wrap around to a small duration.
func (p *parser) duration(name string, def, lo, hi time.Duration) time.Duration {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v) // fails on overflow
	if err != nil {
		n, nerr := strconv.ParseInt(v, 10, 64)
		if nerr == nil && n >= int64(lo/time.Second) && n <= int64(hi/time.Second) {
			d, err = time.Duration(n)*time.Second, nil
		}
	}
	if err != nil || d < lo || d > hi {
		p.fail(name, v, fmt.Sprintf("a duration from %s to %s like 90s or 5m (a bare number means seconds)", durationString(lo), durationString(hi)))
		return 0
	}
	return d
}

// durationString writes a bound as a user would type it: 1s, 1h, 24h.
func durationString(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return d.String()
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

// command resolves a program name on PATH, or checks an explicit path,
// resolved against the caller's folder when relative.
func (p *parser) command(name, def string) string {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	if !strings.ContainsRune(v, filepath.Separator) {
		return v
	}
	abs, ok := p.resolve(name, v)
	if !ok {
		return ""
	}
	if st, err := os.Stat(abs); err != nil || !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
		p.fail(name, v, fmt.Sprintf("an executable file or a program name on PATH (%s is not executable)", abs))
		return ""
	}
	return abs
}
