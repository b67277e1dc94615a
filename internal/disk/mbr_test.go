package disk

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestRootPartitionNixOSLayout(t *testing.T) {
	img := makeSDImage(t, 96<<20)
	root, err := RootPartition(img)
	if err != nil {
		t.Fatal(err)
	}
	want := Partition{Index: 2, Start: 39845888, Size: 96<<20 - 39845888, Type: TypeLinux}
	if root != want {
		t.Errorf("root partition %+v, want %+v", root, want)
	}
	parts, err := Partitions(img)
	if err != nil {
		t.Fatal(err)
	}
	fat := Partition{Index: 1, Start: 8 << 20, Size: 30 << 20, Type: TypeFAT32LBA}
	if len(parts) != 2 || parts[0] != fat || parts[1] != want {
		t.Errorf("partitions %+v, want [%+v %+v]", parts, fat, want)
	}
}

func TestRootPartitionLastLinux(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.img")
	writeTable(t, img, 64<<20, "start=2048, size=2048, type=83\nstart=4096, size=4096, type=c\nstart=8192, size=8192, type=83\n")
	root, err := RootPartition(img)
	if err != nil {
		t.Fatal(err)
	}
	if root.Index != 3 || root.Start != 8192*512 || root.Size != 8192*512 {
		t.Errorf("got %+v, want partition 3 at %d", root, 8192*512)
	}
}

func TestPartitionErrors(t *testing.T) {
	dir := t.TempDir()

	noMBR := filepath.Join(dir, "zeros.img")
	if err := os.WriteFile(noMBR, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := RootPartition(noMBR); err == nil || !strings.Contains(err.Error(), "no MBR") {
		t.Errorf("no MBR: got %v", err)
	}

	short := filepath.Join(dir, "short.img")
	if err := os.WriteFile(short, []byte("tiny"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Partitions(short); err == nil || !strings.Contains(err.Error(), "shorter than one sector") {
		t.Errorf("short file: got %v", err)
	}

	fatOnly := filepath.Join(dir, "fat.img")
	writeTable(t, fatOnly, 16<<20, "start=2048, type=c\n")
	if _, err := RootPartition(fatOnly); err == nil || !strings.Contains(err.Error(), "no Linux") {
		t.Errorf("no Linux partition: got %v", err)
	}

	truncated := filepath.Join(dir, "truncated.img")
	writeTable(t, truncated, 16<<20, "start=2048, type=83\n")
	if err := os.Truncate(truncated, 8<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := RootPartition(truncated); err == nil || !strings.Contains(err.Error(), "beyond the end") {
		t.Errorf("truncated image: got %v", err)
	}
}

// writeTable makes a sparse file of size bytes with an MBR from sfdisk's
// script lines.
func writeTable(t *testing.T, img string, size int64, lines string) {
	t.Helper()
	sfdisk := needTool(t, "sfdisk")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sfdisk, "--quiet", img)
	cmd.Stdin = strings.NewReader("label: dos\n" + lines)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
}
