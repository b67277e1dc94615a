package disk

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// nixosRootOffset is where the NixOS SD image's root partition starts.
const nixosRootOffset = 38 << 20

// needTool skips the test when a command is missing and returns its path.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := LookTool(name)
	if err != nil {
		t.Skipf("%s not available: %v", name, err)
	}
	return p
}

// run runs a command and fails the test with its output on error.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// makeSDImage builds a sparse image of size bytes laid out like the NixOS SD
// image: MBR, a 30 MiB FAT partition at 8 MiB and an ext4 NIXOS_SD from
// 38 MiB to the end. It returns the image's path.
func makeSDImage(t *testing.T, size int64) string {
	t.Helper()
	sfdisk := needTool(t, "sfdisk")
	mke2fs := needTool(t, "mke2fs")
	img := filepath.Join(t.TempDir(), "sd image.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sfdisk, "--quiet", img)
	cmd.Stdin = strings.NewReader("label: dos\nstart=16384, size=61440, type=c\nstart=77824, type=83\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	fsKiB := (size - nixosRootOffset) >> 10
	run(t, mke2fs, "-q", "-F", "-t", "ext4", "-L", "NIXOS_SD",
		"-E", fmt.Sprintf("offset=%d", nixosRootOffset), img, fmt.Sprintf("%dk", fsKiB))
	return img
}

// sameFiles fails the test unless files a and b have the same content.
func sameFiles(t *testing.T, a, b string) {
	t.Helper()
	da, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	db, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(da, db) {
		t.Fatalf("%s and %s differ (%d and %d bytes)", a, b, len(da), len(db))
	}
}

// leftovers returns the names in dir other than keep.
func leftovers(t *testing.T, dir string, keep ...string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
outer:
	for _, e := range ents {
		for _, k := range keep {
			if e.Name() == k {
				continue outer
			}
		}
		names = append(names, e.Name())
	}
	return names
}
