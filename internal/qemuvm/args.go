// Package qemuvm runs the armdev guest under QEMU: it builds qemu-system-aarch64's
// argument list as data, picks an accelerator and CPU model for the host, starts QEMU
// in the background with a pid file and records its command line, finds that process
// (through the pid file or by scanning processes) and kills it safely, talks QMP, and
// attaches to or tails the guest's serial console.
//
// The package knows nothing about the rest of armdev: every function takes plain
// parameters (paths, ports, sizes).
package qemuvm

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// DefaultName is the guest name used when Spec.Name is empty. QEMU sets it as the
// process name (/proc/PID/comm), which is how Inspect and FindGuest recognise the
// guest (together with its disk).
const DefaultName = "armdev-guest"

// Share tags the guest mounts: the project tree and the guest's /etc/nixos.
const (
	ShareTag     = "rsonpath"
	NixConfigTag = "nixconfig"
)

// Spec describes one guest: what to run and where its runtime files live.
type Spec struct {
	QEMU         string // qemu-system-aarch64 binary (name or path)
	UBoot        string // u-boot.bin given to -bios
	Disk         string // the guest disk
	DiskFormat   string // format of Disk; "" means qcow2
	ShareDir     string // host folder exported over 9p with tag "rsonpath"; "" = none
	NixConfigDir string // host folder exported over 9p with tag "nixconfig"; "" = none
	CPUs         int    // -smp; 0 leaves QEMU's default
	MemoryMiB    int    // -m in MiB; 0 leaves QEMU's default
	SSHPort      int    // host port on 127.0.0.1 forwarded to the guest's port 22; 0 = none
	Accel        string // accelerator override ("" = auto, see ChooseAccel)
	CPU          string // CPU model override ("" = auto, see ChooseAccel)
	GUI          bool   // show a display with virtio-gpu, keyboard and tablet
	PIDFile      string // QEMU writes its pid here
	QMPSocket    string // unix socket path for QMP (see SocketPath for long paths)
	SerialSocket string // unix socket path for the serial console
	SerialLog    string // everything the guest prints on its serial console is appended here
	Name         string // guest and process name; "" means DefaultName
}

// name returns the guest name with the default applied.
func (s Spec) name() string {
	if s.Name == "" {
		return DefaultName
	}
	return s.Name
}

// Validate reports the first missing or invalid field of s as one clear line.
func (s Spec) Validate() error {
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"QEMU binary", s.QEMU}, {"u-boot", s.UBoot}, {"disk", s.Disk},
		{"pid file", s.PIDFile}, {"QMP socket", s.QMPSocket},
		{"serial socket", s.SerialSocket}, {"serial log", s.SerialLog},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("guest spec: missing %s", strings.Join(missing, ", "))
	}
	if s.CPUs < 0 || s.MemoryMiB < 0 {
		return errors.New("guest spec: CPU count and memory must not be negative")
	}
	if s.SSHPort < 0 || s.SSHPort > 65535 {
		return fmt.Errorf("guest spec: SSH port %d is out of range 1-65535", s.SSHPort)
	}
	return nil
}

// escapeOpt escapes a value placed inside a QEMU option string: QEMU splits options
// at ',' and reads ",," as a literal comma.
func escapeOpt(v string) string {
	return strings.ReplaceAll(v, ",", ",,")
}

// Args returns QEMU's arguments (without the binary) for spec, with the given
// accelerator and CPU model (see ChooseAccel). It is a pure function: paths are used
// as given, so pass absolute ones (Start does this).
//
// The guest gets: the virt machine with acpi=off (so that QMP system_powerdown reaches
// a device-tree-booted guest through gpio-keys; with ACPI on, u-boot's guest sees no
// power button), u-boot as firmware, virtio rng/disk/net, two 9p shares, SSH forwarded
// from 127.0.0.1 only, no display unless spec.GUI, QMP and the serial console on unix
// sockets, and the serial output logged to spec.SerialLog.
func Args(spec Spec, accel, cpu string) []string {
	name := escapeOpt(spec.name())
	a := []string{
		"-name", name + ",process=" + name,
		"-no-user-config",
		// -nodefaults drops QEMU's default serial, monitor, NIC and VGA; everything the
		// guest and u-boot need is added explicitly below.
		"-nodefaults",
		"-machine", "virt,gic-version=max,acpi=off",
	}
	if accel != "" {
		a = append(a, "-accel", accel)
	}
	if cpu != "" {
		a = append(a, "-cpu", cpu)
	}
	if spec.CPUs > 0 {
		a = append(a, "-smp", strconv.Itoa(spec.CPUs))
	}
	if spec.MemoryMiB > 0 {
		a = append(a, "-m", strconv.Itoa(spec.MemoryMiB)+"M")
	}
	a = append(a, "-bios", spec.UBoot, "-device", "virtio-rng-pci")

	format := spec.DiskFormat
	if format == "" {
		format = "qcow2"
	}
	a = append(a,
		"-drive", "if=none,id=hd0,file="+escapeOpt(spec.Disk)+",format="+escapeOpt(format)+",cache=writeback,discard=unmap",
		"-device", "virtio-blk-pci,drive=hd0",
	)

	net := "user,id=net0"
	if spec.SSHPort > 0 {
		// 127.0.0.1 only: the original forwarded on all interfaces.
		net += ",hostfwd=tcp:127.0.0.1:" + strconv.Itoa(spec.SSHPort) + "-:22"
	}
	// romfile= (empty): no PXE option ROM. PCI NICs load efi-virtio.rom by
	// default, which only ipxe-qemu ships (a Recommends that minimal installs,
	// containers and CI skip), and QEMU refuses to start without it. u-boot
	// boots from the disk and never uses it. No other device here loads a ROM
	// (TestDevicesNeedNoROM checks that on the real QEMU).
	a = append(a, "-netdev", net, "-device", "virtio-net-pci,netdev=net0,romfile=")

	// Both shares use security_model=none: files keep their plain host ownership and
	// modes, so the host can edit them. (The original used mapped-xattr for the config
	// share, which hides guest-side ownership in xattrs the host does not see.)
	// multidevs=remap keeps inode numbers unique when the folder spans mount points.
	for i, s := range []struct{ dir, tag string }{
		{spec.ShareDir, ShareTag}, {spec.NixConfigDir, NixConfigTag},
	} {
		if s.dir == "" {
			continue
		}
		id := "fs" + strconv.Itoa(i)
		a = append(a,
			"-fsdev", "local,id="+id+",path="+escapeOpt(s.dir)+",security_model=none,multidevs=remap",
			"-device", "virtio-9p-pci,fsdev="+id+",mount_tag="+s.tag,
		)
	}

	if spec.GUI {
		a = append(a,
			"-device", "virtio-gpu-pci",
			"-device", "qemu-xhci,id=xhci",
			"-device", "usb-kbd,bus=xhci.0",
			"-device", "usb-tablet,bus=xhci.0",
			"-display", "default",
		)
	} else {
		a = append(a, "-display", "none")
	}

	a = append(a,
		"-pidfile", spec.PIDFile,
		"-qmp", "unix:"+escapeOpt(spec.QMPSocket)+",server=on,wait=off",
		"-chardev", "socket,id=ser0,path="+escapeOpt(spec.SerialSocket)+",server=on,wait=off,logfile="+escapeOpt(spec.SerialLog)+",logappend=on",
		"-serial", "chardev:ser0",
	)
	return a
}

// CmdlineQuoted returns bin and args as one POSIX shell command line that can be
// pasted to run the same command: words are single-quoted only when they need it.
func CmdlineQuoted(bin string, args []string) string {
	words := make([]string, 0, 1+len(args))
	// A first word holding "=" would read as a variable assignment.
	words = append(words, shellQuote(bin, strings.Contains(bin, "=")))
	for _, a := range args {
		words = append(words, shellQuote(a, false))
	}
	return strings.Join(words, " ")
}

// shellQuote quotes s for a POSIX shell when it holds anything but characters
// that no shell treats specially, or when force is set.
func shellQuote(s string, force bool) string {
	plain := s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("@%+=:,./_-", r))
	}) < 0
	if plain && !force {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
