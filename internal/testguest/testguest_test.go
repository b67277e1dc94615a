package testguest

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rsonpath/armdev/internal/disk"
)

func TestParsePrintURIs(t *testing.T) {
	out := `'http://deb.debian.org/debian/pool/main/b/busybox/busybox-static_1.35.0-4%2bdeb12u1%2bb1_arm64.deb' busybox-static_1%3a1.35.0-4+deb12u1+b1_arm64.deb 822236 SHA256:732c9135564fc71337e0e05fb4da4d11e6c28c1834bce3e405e575afef2a52f5
W: some warning
'http://deb.debian.org/debian/pool/main/d/dropbear/dropbear-bin_2022.83-1%2bdeb12u3_arm64.deb' dropbear-bin_2022.83-1+deb12u3_arm64.deb 143724 SHA256:5ac2b0026ee47cbbb2378e339400a183196e9fe291d4794754b144b2dd8723e0
`
	debs, err := parsePrintURIs(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(debs) != 2 {
		t.Fatalf("got %d debs, want 2: %+v", len(debs), debs)
	}
	if debs[0].File != "busybox-static_1%3a1.35.0-4+deb12u1+b1_arm64.deb" || debs[0].Size != 822236 ||
		debs[0].SHA256 != "732c9135564fc71337e0e05fb4da4d11e6c28c1834bce3e405e575afef2a52f5" {
		t.Errorf("first deb = %+v", debs[0])
	}
	if _, err := parsePrintURIs("'http://x/y.deb' y.deb 12 MD5Sum:abc\n"); err == nil {
		t.Error("a line without SHA256 was accepted")
	}
	if _, err := parsePrintURIs("'http://x/y.deb' ../y.deb 12 SHA256:abc\n"); err == nil {
		t.Error("a file name with a slash was accepted")
	}
}

func TestPkgSpec(t *testing.T) {
	for in, want := range map[string]string{
		"busybox-static_1%3a1.35.0-4+deb12u1+b1_arm64.deb": "busybox-static:arm64=1:1.35.0-4+deb12u1+b1",
		"linux-image-6.1.0-56-arm64_6.1.192-2_arm64.deb":   "linux-image-6.1.0-56-arm64:arm64=6.1.192-2",
		"zlib1g_1%3a1.2.13.dfsg-1_arm64.deb":               "zlib1g:arm64=1:1.2.13.dfsg-1",
	} {
		if got := pkgSpec(in); got != want {
			t.Errorf("pkgSpec(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRecipeKeyFollowsPackages(t *testing.T) {
	a := []deb{{File: "a_1_arm64.deb", SHA256: "00"}}
	b := []deb{{File: "a_2_arm64.deb", SHA256: "00"}}
	ka, err := recipeKey(a)
	if err != nil {
		t.Fatal(err)
	}
	ka2, _ := recipeKey(a)
	kb, _ := recipeKey(b)
	if ka != ka2 {
		t.Errorf("key not stable: %s vs %s", ka, ka2)
	}
	if ka == kb {
		t.Errorf("key %s ignores the package version", ka)
	}
}

// TestBuildGuestPrograms compiles the guest's Go programs from the embedded
// sources the way Build does and checks they are static arm64 executables.
func TestBuildGuestPrograms(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles Go programs")
	}
	dir := t.TempDir()
	if err := extractRecipe(dir); err != nil {
		t.Fatal(err)
	}
	for _, p := range guestPrograms {
		t.Run(p.dir, func(t *testing.T) {
			if _, err := recipe.ReadFile(p.dir + "/main.go"); err != nil {
				t.Fatalf("%s/main.go is not part of the recipe (and so of the cache key): %v", p.dir, err)
			}
			out := filepath.Join(dir, p.dir+".bin")
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
			defer cancel()
			if err := buildGuestProgram(ctx, dir, filepath.Join(dir, p.dir), out, io.Discard); err != nil {
				t.Fatal(err)
			}
			checkStaticArm64(t, out)
		})
	}
}

// checkStaticArm64 fails t unless path is a statically linked arm64 ELF
// executable.
func checkStaticArm64(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_AARCH64 || f.Type != elf.ET_EXEC {
		t.Errorf("%s: machine %v, type %v; want an AArch64 executable", path, f.Machine, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s is dynamically linked", path)
		}
	}
}

// TestScriptsParse checks every shell script of the recipe with sh -n.
func TestScriptsParse(t *testing.T) {
	dir := t.TempDir()
	if err := extractRecipe(dir); err != nil {
		t.Fatal(err)
	}
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !bytes.HasPrefix(b, []byte("#!/bin/sh")) {
			return nil
		}
		n++
		if out, err := exec.Command("sh", "-n", p).CombinedOutput(); err != nil {
			t.Errorf("sh -n %s: %v\n%s", p, err, out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 6 {
		t.Errorf("checked %d scripts, want at least 6 (build.sh, init, rcS, rcK, sshd, stand-in, acpi)", n)
	}
}

// TestBuild builds the image (or takes it from the cache) and checks its
// layout against the NixOS SD image's. Needs ARMDEV_E2E=1.
func TestBuild(t *testing.T) {
	if os.Getenv("ARMDEV_E2E") != "1" {
		t.Skip("set ARMDEV_E2E=1 to build the test guest")
	}
	if err := Prerequisites(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()
	var log bytes.Buffer
	res, err := Build(ctx, Options{Log: &log})
	if err != nil {
		t.Fatalf("%v\nlog:\n%s", err, log.String())
	}
	log.Reset()
	again, err := Build(ctx, Options{Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	if again.ImageZst != res.ImageZst || again.SHA256 != res.SHA256 || again.Size != res.Size {
		t.Errorf("second Build = %+v, want the cached %+v", again, res)
	}
	if !strings.Contains(log.String(), "cached image") {
		t.Errorf("second Build did not use the cache; log:\n%s", log.String())
	}
	if sum, err := fileSHA256(res.ImageZst); err != nil || sum != res.SHA256 {
		t.Errorf("SHA-256 of %s = %s (%v), Result says %s", res.ImageZst, sum, err, res.SHA256)
	}
	if len(res.Packages) != 1+len(basePackages) {
		t.Errorf("Packages = %v", res.Packages)
	}

	img := filepath.Join(t.TempDir(), "disk.img")
	if out, err := exec.CommandContext(ctx, "zstd", "-q", "-d", res.ImageZst, "-o", img).CombinedOutput(); err != nil {
		t.Fatalf("zstd -d: %v\n%s", err, out)
	}
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != res.Size {
		t.Errorf("raw image has %d bytes, Result.Size = %d", st.Size(), res.Size)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mbr := make([]byte, 512)
	if _, err := f.ReadAt(mbr, 0); err != nil {
		t.Fatal(err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		t.Fatalf("no MBR signature: % x", mbr[510:])
	}
	if id := binary.LittleEndian.Uint32(mbr[440:]); id != 0x2178694e {
		t.Errorf("disk id = %#x, want 0x2178694e (nixpkgs sdImage.firmwarePartitionID)", id)
	}
	type part struct {
		boot, typ     byte
		start, length int64
	}
	parts := make([]part, 4)
	for i := range parts {
		e := mbr[446+16*i:]
		parts[i] = part{e[0], e[4], int64(binary.LittleEndian.Uint32(e[8:])) * 512, int64(binary.LittleEndian.Uint32(e[12:])) * 512}
	}
	const MiB = 1 << 20
	if p := parts[0]; p.typ != 0x0b || p.start != 8*MiB || p.length != 30*MiB || p.boot != 0 {
		t.Errorf("partition 1 = %+v, want W95 FAT32 (0x0b) at 8 MiB, 30 MiB, not bootable", p)
	}
	if p := parts[1]; p.typ != 0x83 || p.start != RootPartitionOffset || p.start+p.length != res.Size || p.boot != 0x80 {
		t.Errorf("partition 2 = %+v, want Linux (0x83), bootable, from %d to the end (%d)", p, RootPartitionOffset, res.Size)
	}
	if parts[2].typ != 0 || parts[3].typ != 0 {
		t.Errorf("partitions 3 and 4 = %+v %+v, want none", parts[2], parts[3])
	}
	fat := make([]byte, 512)
	if _, err := f.ReadAt(fat, 8*MiB); err != nil {
		t.Fatal(err)
	}
	if fat[510] != 0x55 || fat[511] != 0xaa || !bytes.Contains(fat, []byte("FIRMWARE   FAT")) {
		t.Errorf("partition 1 holds no FAT file system labelled FIRMWARE")
	}

	root := img + "?offset=" + strconv.Itoa(RootPartitionOffset)
	debugfsBin, err := disk.LookTool("debugfs")
	if err != nil {
		t.Fatal(err)
	}
	debugfs := func(req string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, debugfsBin, "-R", req, root).Output()
		if err != nil {
			t.Fatalf("debugfs -R %q: %v", req, err)
		}
		return string(out)
	}
	conf := debugfs("cat /boot/extlinux/extlinux.conf")
	for _, want := range []string{"DEFAULT nixos-default", "LINUX ../nixos/Image", "INITRD ../nixos/initrd", "APPEND console=ttyAMA0,115200n8"} {
		if !strings.Contains(conf, want) {
			t.Errorf("extlinux.conf lacks %q:\n%s", want, conf)
		}
	}
	if s := debugfs("stats"); !strings.Contains(s, "Filesystem volume name:   NIXOS_SD") {
		t.Errorf("root file system is not labelled NIXOS_SD")
	}
	for path, want := range map[string]struct{ typ, mode string }{
		"/boot/nixos/Image":           {"regular", "0644"},
		"/boot/nixos/initrd":          {"regular", "0644"},
		"/root/.ssh":                  {"directory", "0700"},
		"/etc/nixos":                  {"directory", "0755"},
		"/rsonpath":                   {"directory", "0755"},
		"/nix-path-registration":      {"regular", "0644"},
		"/bin/nixos-rebuild":          {"symlink", "0777"},
		"/sbin/init":                  {"symlink", "0777"},
		"/usr/sbin/dropbear":          {"regular", "0755"},
		"/var/log/armdev-standin.log": {"regular", "0666"},
	} {
		s := debugfs("stat " + path)
		if !strings.Contains(s, "Type: "+want.typ+" ") || !strings.Contains(s, "Mode:  "+want.mode+" ") ||
			!strings.Contains(s, "User:     0   Group:     0 ") {
			t.Errorf("%s: want a %s, mode %s, owned by root; debugfs says:\n%s", path, want.typ, want.mode, firstLines(s, 3))
		}
	}
	// sudo: the Go program, setuid root.
	const sudo = standinStore + "/sw/bin/sudo"
	if s := debugfs("stat " + sudo); !strings.Contains(s, "Type: regular ") || !strings.Contains(s, "Mode:  04755 ") ||
		!strings.Contains(s, "User:     0   Group:     0 ") {
		t.Errorf("%s: want a regular file, mode 04755, owned by root:root; debugfs says:\n%s", sudo, firstLines(s, 3))
	}
	sudoBin := filepath.Join(t.TempDir(), "sudo")
	debugfs("dump " + sudo + " " + sudoBin)
	checkStaticArm64(t, sudoBin)
	if s := debugfs("stat /bin/sudo"); !strings.Contains(s, "Type: symlink ") || !strings.Contains(s, "/run/current-system/sw/bin/sudo") {
		t.Errorf("/bin/sudo: want a symlink to /run/current-system/sw/bin/sudo; debugfs says:\n%s", firstLines(s, 12))
	}

	if s := debugfs("ls /root/.ssh"); strings.Contains(s, "authorized_keys") {
		t.Errorf("the built image must not carry a root key; /root/.ssh holds: %s", s)
	}

	// Owners and modes the stock image's activation sets.
	owner := regexp.MustCompile(`User:\s+(\d+)\s+Group:\s+(\d+)`)
	for path, want := range map[string]struct{ typ, mode, owner string }{
		"/etc/shadow":                 {"regular", "0640", "0:318"},
		"/etc/passwd":                 {"regular", "0644", "0:0"},
		"/etc/group":                  {"regular", "0644", "0:0"},
		"/home/nixos":                 {"directory", "0700", "1000:100"},
		"/bin/bash":                   {"regular", "0755", "0:0"},
		MmapWriteProgram:              {"regular", "0755", "0:0"},
		"/var/lib/nixos/uid-map":      {"regular", "0644", "0:0"},
		standinStore + "/sw/bin/bash": {"symlink", "0777", "0:0"},
	} {
		s := debugfs("stat " + path)
		m := owner.FindStringSubmatch(s)
		if !strings.Contains(s, "Type: "+want.typ+" ") || !strings.Contains(s, "Mode:  "+want.mode+" ") || m == nil || m[1]+":"+m[2] != want.owner {
			t.Errorf("%s: want a %s, mode %s, owned by %s; debugfs says:\n%s", path, want.typ, want.mode, want.owner, firstLines(s, 3))
		}
	}
	// The stock image's accounts, as installation-device.nix leaves them.
	for path, want := range map[string][]string{
		"/etc/shadow": {"root::1::::::\n", "nixos::1::::::\n", "nobody:!:1::::::\n"},
		"/etc/passwd": {"root:x:0:0:System administrator:/root:/run/current-system/sw/bin/bash\n",
			"nixos:x:1000:100::/home/nixos:/run/current-system/sw/bin/bash\n",
			"nixbld32:x:30032:30000:Nix build user 32:/var/empty:/run/current-system/sw/bin/nologin\n"},
		"/etc/group":                            {"wheel:x:1:nixos\n", "lp:x:20:\n", "users:x:100:\n", "nixbld:x:30000:nixbld1,", "nogroup:x:65534:\n"},
		"/etc/shells":                           {"/run/current-system/sw/bin/bash\n"},
		"/var/lib/armdev-standin/active-system": {"installer\n"},
		"/var/lib/nixos/declarative-users":      {"nixos"},
	} {
		got := debugfs("cat " + path)
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("%s lacks %q:\n%s", path, w, got)
			}
		}
	}
	// The first boot writes the installer's configuration.nix (rcS).
	if s := debugfs("ls /etc/nixos"); strings.Contains(s, "configuration.nix") {
		t.Errorf("the built image already has /etc/nixos/configuration.nix: %s", s)
	}
	if s := debugfs("ls -l /lib/aarch64-linux-gnu"); !strings.Contains(s, "libtinfo.so.6") {
		t.Errorf("bash's libtinfo.so.6 is missing from /lib/aarch64-linux-gnu")
	}
	for path, static := range map[string]bool{"/bin/bash": false, MmapWriteProgram: true} {
		bin := filepath.Join(t.TempDir(), "bin")
		debugfs("dump " + path + " " + bin)
		if static {
			checkStaticArm64(t, bin)
		} else if f, err := elf.Open(bin); err != nil || f.Machine != elf.EM_AARCH64 {
			t.Errorf("%s is not an AArch64 program: %v", path, err)
		} else {
			f.Close()
		}
	}
}

// standinStore is the stand-in's system profile in the image (build.sh).
const standinStore = "/nix/store/00000000000000000000000000000000-nixos-system-armdev-standin"

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

func TestLockDirExcludes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	unlock, err := lockDir(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if _, err := lockDir(ctx, path); err == nil {
		t.Fatal("a second lock was granted while the first was held")
	}
	unlock()
	unlock2, err := lockDir(t.Context(), path)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock2()
}
