package workspace

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rsonpath/armdev/internal/fetch"
)

// A too-small ARMDEV_DISK_SIZE is refused as soon as armdev can know:
// before the download when the download alone is bigger, and before the
// decompression when the zstd header declares a bigger image (issue 9 §7),
// not after gigabytes were downloaded and decompressed.
func TestDiskSizeRefusedEarly(t *testing.T) {
	t.Run("before the download", func(t *testing.T) {
		f := newFixture(t)
		w := f.workspace()
		lock := fetch.Lock{
			Release: "26.05", BuildID: 77, URL: f.hydra.URL() + "/build/77/download/1/big.img.zst",
			FileName: "big.img.zst", Size: 3 << 30, SHA256: strings.Repeat("a", 64),
		}
		if err := fetch.WriteLock(w.l.HydraLock(), lock); err != nil {
			t.Fatal(err)
		}
		f.hydra.ResetLog()
		err := f.image()
		if err == nil || !strings.Contains(err.Error(), "ARMDEV_DISK_SIZE=1.0 GiB is smaller than the image (more than its download's 3.0 GiB): set it to at least 3G") {
			t.Fatalf("image with a 1G disk and a 3 GiB download: %v", err)
		}
		if reqs := f.hydra.Requests(); len(reqs) != 0 {
			t.Errorf("the refusal came after requests: %v", reqs)
		}
	})
	t.Run("before the decompression", func(t *testing.T) {
		f := newFixture(t)
		f.hydra.AddBuild("26.05", "nixos-image-sd-card-26.05.2-aarch64-linux.img.zst", zstdDeclaring(2<<30))
		err := f.image()
		if err == nil || !strings.Contains(err.Error(), "ARMDEV_DISK_SIZE=1.0 GiB is smaller than the image (2.0 GiB): set it to at least 2G") {
			t.Fatalf("image with a 1G disk and a 2 GiB image: %v", err)
		}
		if entries, _ := os.ReadDir(filepath.Join(f.root, ".armdev", "bases")); len(entries) != 0 {
			t.Errorf("something was decompressed before the refusal: %v", entries)
		}
		f.env["ARMDEV_DISK_SIZE"] = "3G"
		if err := f.image(); err == nil || strings.Contains(err.Error(), "ARMDEV_DISK_SIZE") {
			t.Errorf("a big enough disk should get past the size check (and fail on the fake image instead): %v", err)
		}
	})
}

// zstdDeclaring is the start of a zstd frame whose header declares size
// bytes of content: enough for the header check, never decompressed.
func zstdDeclaring(size uint64) []byte {
	b := []byte{0x28, 0xb5, 0x2f, 0xfd, 0xe0} // magic; 8-byte content size, single segment
	b = binary.LittleEndian.AppendUint64(b, size)
	return append(b, 0x01, 0x00, 0x00) // the last block: raw, empty
}
