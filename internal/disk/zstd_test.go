package disk

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/rsonpath/armdev/internal/disk/sdlike"
)

// compressedSDImage writes a 64 MiB SD-like image and its .zst (made by the
// zstd command) into dir.
func compressedSDImage(t *testing.T, dir string) (raw, zst string) {
	t.Helper()
	zstdCLI := needTool(t, "zstd")
	raw = filepath.Join(dir, "sd.img")
	if err := sdlike.Write(raw, 64<<20, 7); err != nil {
		t.Fatal(err)
	}
	zst = filepath.Join(dir, "sd.img.zst")
	run(t, zstdCLI, "-q", "-f", raw, "-o", zst)
	return raw, zst
}

func TestDecompressZstdRoundTrip(t *testing.T) {
	raw, zst := compressedSDImage(t, t.TempDir())
	zstSize := fileSize(t, zst)
	dir := t.TempDir()
	dst := filepath.Join(dir, "out.img")
	// An old dst is replaced.
	if err := os.WriteFile(dst, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	var calls int
	var lastDone, lastTotal int64
	err := DecompressZstd(t.Context(), zst, dst, func(done, total int64) {
		calls++
		if done < lastDone {
			t.Errorf("progress went back from %d to %d", lastDone, done)
		}
		lastDone, lastTotal = done, total
	})
	if err != nil {
		t.Fatal(err)
	}
	sameFiles(t, raw, dst)
	if calls < 2 || lastDone != zstSize || lastTotal != zstSize {
		t.Errorf("progress: %d calls, last %d/%d, want >= 2 calls ending at %d/%d", calls, lastDone, lastTotal, zstSize, zstSize)
	}
	alloc, err := Allocated(dst)
	if err != nil {
		t.Fatal(err)
	}
	if size := fileSize(t, dst); alloc > size/3 {
		t.Errorf("output not sparse: %d of %d bytes allocated", alloc, size)
	}
	if left := leftovers(t, dir, "out.img"); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

func TestDecompressZstdCancel(t *testing.T) {
	_, zst := compressedSDImage(t, t.TempDir())
	dir := t.TempDir()
	dst := filepath.Join(dir, "out.img")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	cancelled := false
	err := DecompressZstd(ctx, zst, dst, func(done, total int64) {
		if done < total {
			cancel()
			cancelled = true
		}
	})
	if !cancelled {
		t.Fatal("progress was never called before the end")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if left := leftovers(t, dir); len(left) > 0 {
		t.Errorf("left behind after cancel: %v", left)
	}

	// A context cancelled before the start.
	dir = t.TempDir()
	if err := DecompressZstd(ctx, zst, filepath.Join(dir, "out.img"), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: got %v", err)
	}
	if left := leftovers(t, dir); len(left) > 0 {
		t.Errorf("left behind after cancel: %v", left)
	}
}

func TestDecompressZstdTruncatedFile(t *testing.T) {
	_, zst := compressedSDImage(t, t.TempDir())
	data, err := os.ReadFile(zst)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.zst")
	if err := os.WriteFile(bad, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "out.img")
	// An old dst stays as it was.
	if err := os.WriteFile(dst, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := DecompressZstd(t.Context(), bad, dst, nil); err == nil {
		t.Fatal("truncated input decompressed without error")
	}
	if got, err := os.ReadFile(dst); err != nil || string(got) != "old" {
		t.Errorf("old dst: %q, %v", got, err)
	}
	if left := leftovers(t, dir, "bad.zst", "out.img"); len(left) > 0 {
		t.Errorf("left behind after failure: %v", left)
	}
}

func TestSparseWriterUnaligned(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	// Zeros and data in pieces that straddle block boundaries.
	want := make([]byte, 1<<20)
	for i := 5000; i < 9000; i++ {
		want[i] = byte(i)
	}
	want[len(want)-1] = 1
	want[300000] = 7
	w := newSparseWriter(t.Context(), f)
	for rest, n := want, 1; len(rest) > 0; n = n*3 + 1 {
		k := min(n, len(rest))
		if got, err := w.Write(rest[:k]); err != nil || got != k {
			t.Fatalf("Write: %d, %v", got, err)
		}
		rest = rest[k:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatal("content differs")
	}
	if alloc, _ := Allocated(f.Name()); alloc >= int64(len(want)) {
		t.Errorf("no holes: %d bytes allocated", alloc)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func TestSparseWriterWriteError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path) // read-only: every pwrite fails
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	w := newSparseWriter(t.Context(), f)
	data := bytes.Repeat([]byte{1}, 1<<20)
	var werr error
	// The writing goroutine's error reaches Write within a few batches.
	for i := 0; i < 4*batches*batchSize/len(data) && werr == nil; i++ {
		_, werr = w.Write(data)
	}
	cerr := w.Close()
	if werr == nil {
		t.Errorf("Write kept succeeding on a read-only file")
	}
	if cerr == nil {
		t.Errorf("Close succeeded on a read-only file")
	}
	if _, err := w.Write(data); !errors.Is(err, errWriterClosed) {
		t.Errorf("Write after Close: %v", err)
	}
}

func TestZstdMinSize(t *testing.T) {
	zstdCLI := needTool(t, "zstd")
	dir := t.TempDir()
	raw := filepath.Join(dir, "img")
	if err := os.WriteFile(raw, bytes.Repeat([]byte("armdev"), 100000), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(zstdCLI, "-q", raw, "-o", raw+".zst").CombinedOutput(); err != nil {
		t.Fatalf("zstd: %v %s", err, out)
	}
	size, known, err := ZstdMinSize(raw + ".zst")
	if err != nil || !known || size != 600000 {
		t.Errorf("ZstdMinSize = %d, %v, %v; want 600000 from the frame header", size, known, err)
	}
	// A stream written through a pipe declares no size.
	cmd := exec.Command(zstdCLI, "-q", "-c", "-")
	cmd.Stdin = bytes.NewReader([]byte("no size known"))
	piped, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(raw+".piped.zst", piped, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, known, err := ZstdMinSize(raw + ".piped.zst"); err != nil || known {
		t.Errorf("piped stream: known=%v err=%v; want unknown", known, err)
	}
	if err := os.WriteFile(raw+".bad", []byte("not zstd at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ZstdMinSize(raw + ".bad"); err == nil {
		t.Error("a file that is not zstd gave no error")
	}
}
