package qemuvm

import (
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

func TestOptValue(t *testing.T) {
	tests := []struct {
		opts, key, value string
		ok               bool
	}{
		{"if=none,id=hd0,file=/a,,b/disk.qcow2,format=qcow2", "file", "/a,b/disk.qcow2", true},
		{"armdev-guest,process=armdev-guest", "process", "armdev-guest", true},
		{"armdev-guest,process=armdev-guest", "armdev-guest", "", false},
		{"file=a,,,format=raw", "file", "a,", true},
		{"file=a=b", "file", "a=b", true},
		{"file=first,file=last", "file", "last", true},
		{"file=", "file", "", true},
		{"if=none,,file=x", "file", "", false}, // ",," is a comma inside if's value
		{"", "file", "", false},
	}
	for _, tc := range tests {
		if v, ok := optValue(tc.opts, tc.key); v != tc.value || ok != tc.ok {
			t.Errorf("optValue(%q, %q) = %q, %v; want %q, %v", tc.opts, tc.key, v, ok, tc.value, tc.ok)
		}
	}
	// What Args escapes, optValue reads back.
	disk := "/my, work/a,,b.qcow2"
	if got := driveFiles(guestArgs(disk)); !slices.Equal(got, []string{disk}) {
		t.Errorf("driveFiles = %q, want %q", got, disk)
	}
	spec := baseSpec()
	spec.Name = "a,b"
	if got := guestName(Args(spec, "", "")); got != "a,b" {
		t.Errorf("guestName = %q", got)
	}
}

func TestPSArgv(t *testing.T) {
	line := "/opt/my qemu/qemu-system-aarch64 -name armdev-guest,process=armdev-guest -nodefaults -drive if=none,file=/my, work/disk.qcow2,format=qcow2 --drive file=/b"
	want := []string{"/opt/my qemu/qemu-system-aarch64", "-name", "armdev-guest,process=armdev-guest", "-nodefaults",
		"-drive", "if=none,file=/my, work/disk.qcow2,format=qcow2", "--drive", "file=/b"}
	if got := psArgv(line); !slices.Equal(got, want) {
		t.Errorf("psArgv =\n%q\nwant\n%q", got, want)
	}
}

// The ps path, used where there is no /proc (macOS), identifies the same guest;
// ps exists here too, so it is exercised on Linux.
func TestPSFallback(t *testing.T) {
	if _, err := exec.LookPath("ps"); err != nil {
		t.Skip("no ps")
	}
	disk, _ := workspace(t, filepath.Join(t.TempDir(), "my, work"))
	pid := startFake(t, DefaultName, guestArgs(disk)...)
	other, _ := workspace(t, filepath.Join(t.TempDir(), "other"))
	decoy := startFake(t, DefaultName, guestArgs(other)...)
	fi, err := statDisk(disk)
	if err != nil {
		t.Fatal(err)
	}

	p, err := psProc(pid)
	if err != nil {
		t.Fatal(err)
	}
	if reason := identify(p, fi, DefaultName); reason != "" {
		t.Errorf("identify(ps of the guest) = %q; argv %q", reason, p.argv)
	}
	procs, err := psCandidates()
	if err != nil {
		t.Fatal(err)
	}
	var found []int
	for _, p := range procs {
		if identify(p, fi, DefaultName) == "" {
			found = append(found, p.pid)
		}
	}
	if !slices.Equal(found, []int{pid}) {
		t.Errorf("ps scan found %v, want [%d] (decoy %d)", found, pid, decoy)
	}
}
