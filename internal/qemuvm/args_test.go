package qemuvm

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// values returns the values given to flag in args, in order.
func values(args []string, flag string) []string {
	var v []string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			v = append(v, args[i+1])
		}
	}
	return v
}

func baseSpec() Spec {
	return Spec{
		QEMU: "qemu-system-aarch64", UBoot: "/u/u-boot.bin", Disk: "/w/disk.qcow2",
		ShareDir: "/w/repo", NixConfigDir: "/w/share/etc/nixos",
		CPUs: 2, MemoryMiB: 4096, SSHPort: 5022,
		PIDFile: "/w/.armdev/qemu.pid", QMPSocket: "/w/.armdev/qmp.sock",
		SerialSocket: "/w/.armdev/serial.sock", SerialLog: "/w/.armdev/serial.log",
	}
}

func TestArgs(t *testing.T) {
	comma := baseSpec()
	comma.Disk = "/w/my, disk/disk.qcow2"
	comma.ShareDir = "/w/a,b c"
	comma.QMPSocket = "/w/x,y/qmp.sock"
	comma.SerialSocket = "/w/x,y/serial.sock"
	comma.SerialLog = "/w/x,y/serial.log"
	gui := baseSpec()
	gui.GUI = true
	noShares := baseSpec()
	noShares.ShareDir, noShares.NixConfigDir = "", ""
	named := baseSpec()
	named.Name = "other"

	tests := []struct {
		name  string
		spec  Spec
		accel string
		cpu   string
		want  map[string][]string // flag → all its values, exactly
	}{
		{"default", baseSpec(), "tcg,thread=multi", "max,pauth-impdef=on", map[string][]string{
			"-name":    {"armdev-guest,process=armdev-guest"},
			"-machine": {"virt,gic-version=max,acpi=off"},
			"-accel":   {"tcg,thread=multi"},
			"-cpu":     {"max,pauth-impdef=on"},
			"-smp":     {"2"},
			"-m":       {"4096M"},
			"-bios":    {"/u/u-boot.bin"},
			"-drive":   {"if=none,id=hd0,file=/w/disk.qcow2,format=qcow2,cache=writeback,discard=unmap"},
			"-netdev":  {"user,id=net0,hostfwd=tcp:127.0.0.1:5022-:22"},
			"-fsdev": {
				"local,id=fs0,path=/w/repo,security_model=none,multidevs=remap",
				"local,id=fs1,path=/w/share/etc/nixos,security_model=none,multidevs=remap",
			},
			"-device": {
				"virtio-rng-pci", "virtio-blk-pci,drive=hd0", "virtio-net-pci,netdev=net0,romfile=",
				"virtio-9p-pci,fsdev=fs0,mount_tag=rsonpath", "virtio-9p-pci,fsdev=fs1,mount_tag=nixconfig",
			},
			"-display": {"none"},
			"-pidfile": {"/w/.armdev/qemu.pid"},
			"-qmp":     {"unix:/w/.armdev/qmp.sock,server=on,wait=off"},
			"-chardev": {"socket,id=ser0,path=/w/.armdev/serial.sock,server=on,wait=off,logfile=/w/.armdev/serial.log,logappend=on"},
			"-serial":  {"chardev:ser0"},
		}},
		{"kvm host", baseSpec(), "kvm", "host", map[string][]string{
			"-accel": {"kvm"}, "-cpu": {"host"},
		}},
		{"commas and spaces", comma, "tcg", "max", map[string][]string{
			"-drive":   {"if=none,id=hd0,file=/w/my,, disk/disk.qcow2,format=qcow2,cache=writeback,discard=unmap"},
			"-fsdev":   {"local,id=fs0,path=/w/a,,b c,security_model=none,multidevs=remap", "local,id=fs1,path=/w/share/etc/nixos,security_model=none,multidevs=remap"},
			"-qmp":     {"unix:/w/x,,y/qmp.sock,server=on,wait=off"},
			"-chardev": {"socket,id=ser0,path=/w/x,,y/serial.sock,server=on,wait=off,logfile=/w/x,,y/serial.log,logappend=on"},
		}},
		{"gui", gui, "tcg", "max", map[string][]string{
			"-display": {"default"},
			"-device": {
				"virtio-rng-pci", "virtio-blk-pci,drive=hd0", "virtio-net-pci,netdev=net0,romfile=",
				"virtio-9p-pci,fsdev=fs0,mount_tag=rsonpath", "virtio-9p-pci,fsdev=fs1,mount_tag=nixconfig",
				"virtio-gpu-pci", "qemu-xhci,id=xhci", "usb-kbd,bus=xhci.0", "usb-tablet,bus=xhci.0",
			},
		}},
		{"no shares", noShares, "tcg", "max", map[string][]string{
			"-fsdev":  nil,
			"-device": {"virtio-rng-pci", "virtio-blk-pci,drive=hd0", "virtio-net-pci,netdev=net0,romfile="},
		}},
		{"name", named, "tcg", "max", map[string][]string{
			"-name": {"other,process=other"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := Args(tc.spec, tc.accel, tc.cpu)
			for flag, want := range tc.want {
				if got := values(args, flag); !slices.Equal(got, want) {
					t.Errorf("%s = %q, want %q", flag, got, want)
				}
			}
			if !slices.Contains(args, "-nodefaults") {
				t.Error("no -nodefaults")
			}
			for _, nd := range values(args, "-netdev") {
				if strings.Contains(nd, "hostfwd=tcp::") || strings.Contains(nd, "0.0.0.0") {
					t.Errorf("SSH forwarded beyond loopback: %s", nd)
				}
			}
		})
	}
}

func TestEscapeOpt(t *testing.T) {
	for in, want := range map[string]string{"": "", "a b": "a b", "a, b": "a,, b", ",,": ",,,,"} {
		if got := escapeOpt(in); got != want {
			t.Errorf("escapeOpt(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := baseSpec().Validate(); err != nil {
		t.Fatal(err)
	}
	s := baseSpec()
	s.Disk, s.PIDFile = "", ""
	err := s.Validate()
	if err == nil || !strings.Contains(err.Error(), "disk, pid file") {
		t.Fatalf("Validate = %v, want missing disk and pid file", err)
	}
	s = baseSpec()
	s.SSHPort = 70000
	if s.Validate() == nil {
		t.Fatal("port 70000 accepted")
	}
}

func TestCmdlineQuoted(t *testing.T) {
	tests := []struct {
		bin  string
		args []string
		want string
	}{
		{"qemu", []string{"-name", "armdev-guest,process=armdev-guest", "-m", "4096M"}, "qemu -name armdev-guest,process=armdev-guest -m 4096M"},
		{"/usr/bin/qemu", []string{"file=/my work/d.qcow2,format=qcow2"}, "/usr/bin/qemu 'file=/my work/d.qcow2,format=qcow2'"},
		{"q", []string{"it's", `"x"`, "$HOME", "", "a\nb", "~", "*"}, `q 'it'\''s' '"x"' '$HOME' '' 'a` + "\n" + `b' '~' '*'`},
		{"A=b", nil, "'A=b'"},
	}
	for _, tc := range tests {
		if got := CmdlineQuoted(tc.bin, tc.args); got != tc.want {
			t.Errorf("CmdlineQuoted(%q, %q) =\n%s\nwant\n%s", tc.bin, tc.args, got, tc.want)
		}
	}
}

// A shell reads the quoted line back as the same words.
func TestCmdlineQuotedRoundTrip(t *testing.T) {
	words := []string{"%s\\0", "plain", "two words", "a,b,,c", `it's "quoted"`, "$HOME `id` $(id)", "", "tab\there", "new\nline", "back\\slash", "!bang", "#hash", "semi;colon", "glob*?[a]", "~user", "a=b"}
	out, err := exec.Command("sh", "-c", CmdlineQuoted("printf", words)).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if !slices.Equal(got, words[1:]) {
		t.Errorf("sh read back\n%q\nwant\n%q", got, words[1:])
	}
}
