package disk

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// BenchResult holds the best of three wall-clock times of each way to
// decompress the same zstd image.
type BenchResult struct {
	// Ours is DecompressZstd (klauspost's Go decoder, sparse, synced).
	Ours time.Duration
	// CLI is a plain `zstd -d -f -o` of the same file.
	CLI time.Duration
}

// Ratio returns Ours divided by CLI.
func (r BenchResult) Ratio() float64 {
	return r.Ours.Seconds() / r.CLI.Seconds()
}

// benchRuns is how many times each decompression runs; the best counts.
const benchRuns = 3

// BenchUnzstdRatio builds an SD-like image of size bytes in a temporary
// folder under workDir and returns the best of three wall-clock times of
// DecompressZstd (ours) and of `zstd -d` (cli) on it; see BenchUnzstd.
func BenchUnzstdRatio(ctx context.Context, workDir string, size int64) (ours, cli time.Duration, err error) {
	r, err := BenchUnzstd(ctx, workDir, size)
	return r.Ours, r.CLI, err
}

// BenchUnzstd builds an SD-like image of size bytes in a temporary folder
// under workDir (see WriteSDLike), compresses it with the zstd command, and
// times DecompressZstd and `zstd -d -f -o` on it, interleaved, best of
// three runs each with a warm page cache. It removes its files before
// returning.
func BenchUnzstd(ctx context.Context, workDir string, size int64) (res BenchResult, err error) {
	zstdCLI, err := exec.LookPath("zstd")
	if err != nil {
		return res, fmt.Errorf("bench unzstd: the zstd command is needed: %w", err)
	}
	dir, err := os.MkdirTemp(workDir, "bench-unzstd-*")
	if err != nil {
		return res, fmt.Errorf("bench unzstd: %w", err)
	}
	defer func() { _ = os.RemoveAll(dir) }()

	raw := filepath.Join(dir, "sd.img")
	if err := WriteSDLike(raw, size, 1); err != nil {
		return res, fmt.Errorf("bench unzstd: %w", err)
	}
	zst := raw + ".zst"
	if out, err := exec.CommandContext(ctx, zstdCLI, "-q", "-T0", "-f", "--rm", raw, "-o", zst).CombinedOutput(); err != nil {
		return res, fmt.Errorf("bench unzstd: zstd: %w: %s", err, strings.TrimSpace(string(out)))
	}
	// Warm the page cache with the compressed file.
	if _, err := os.ReadFile(zst); err != nil {
		return res, fmt.Errorf("bench unzstd: %w", err)
	}

	out := filepath.Join(dir, "out.img")
	runs := []struct {
		best *time.Duration
		run  func() error
	}{
		{&res.CLI, func() error {
			if msg, err := exec.CommandContext(ctx, zstdCLI, "-q", "-d", "-f", zst, "-o", out).CombinedOutput(); err != nil {
				return fmt.Errorf("zstd -d: %w: %s", err, strings.TrimSpace(string(msg)))
			}
			return nil
		}},
		{&res.Ours, func() error { return DecompressZstd(ctx, zst, out, nil) }},
	}
	for range benchRuns {
		for _, r := range runs {
			_ = os.Remove(out)
			start := time.Now()
			if err := r.run(); err != nil {
				return res, fmt.Errorf("bench unzstd: %w", err)
			}
			if d := time.Since(start); *r.best == 0 || d < *r.best {
				*r.best = d
			}
		}
	}
	_ = os.Remove(out)
	return res, nil
}

// WriteSDLike writes a sparse file of size bytes at path that looks like an
// SD card image to a compressor: mostly zeros, random 1 MiB chunks making up
// about 15% of it, and some repetitive text. seed makes it reproducible.
func WriteSDLike(path string, size int64, seed uint64) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write image: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("write image: %w", cerr)
		}
	}()
	const chunk = 1 << 20
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	src := rand.NewChaCha8([32]byte{byte(seed)})
	buf := make([]byte, chunk)
	text := []byte(strings.Repeat("nixos store path /nix/store/0123456789abcdfghijklmnpqrsvwxyz-glibc-2.37/lib/libc.so.6\n", chunk/64))[:chunk]
	for off := int64(0); off+chunk <= size; off += chunk {
		switch r := rng.IntN(100); {
		case r < 15:
			_, _ = src.Read(buf)
			// Leave some zero blocks inside, like half-filled ext4 groups.
			clear(buf[chunk/2 : chunk/2+64<<10])
		case r < 18:
			copy(buf, text)
		default:
			continue
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			return fmt.Errorf("write image: %w", err)
		}
	}
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("write image: %w", err)
	}
	return nil
}
