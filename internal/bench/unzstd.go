package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/rsonpath/armdev/internal/disk"
	"github.com/rsonpath/armdev/internal/disk/sdlike"
)

// unzstdResult holds the best of three wall-clock times of each way to
// decompress the same zstd image.
type unzstdResult struct {
	// Ours is DecompressZstd (klauspost's Go decoder, sparse, synced).
	Ours time.Duration
	// CLI is a plain `zstd -d -f -o` of the same file.
	CLI time.Duration
}

// benchRuns is how many times each decompression runs; the best counts.
const benchRuns = 3

// benchUnzstd builds an SD-like image of size bytes in a temporary folder
// under workDir (see sdlike.Write), compresses it with the zstd command, and
// times DecompressZstd and `zstd -d -f -o` on it, interleaved, best of
// three runs each with a warm page cache. It removes its files before
// returning.
func benchUnzstd(ctx context.Context, workDir string, size int64) (res unzstdResult, err error) {
	zstdCLI, err := exec.LookPath("zstd")
	if err != nil {
		return res, fmt.Errorf("bench unzstd: the zstd command is needed: %w", err)
	}
	dir, err := os.MkdirTemp(workDir, "bench-unzstd-*")
	if err != nil {
		return res, err
	}
	defer func() { _ = os.RemoveAll(dir) }()

	raw := filepath.Join(dir, "sd.img")
	if err := sdlike.Write(raw, size, 1); err != nil {
		return res, err
	}
	zst := raw + ".zst"
	if out, err := exec.CommandContext(ctx, zstdCLI, "-q", "-T0", "-f", "--rm", raw, "-o", zst).CombinedOutput(); err != nil {
		return res, fmt.Errorf("bench unzstd: zstd: %w: %s", err, strings.TrimSpace(string(out)))
	}
	// Warm the page cache with the compressed file.
	if _, err := os.ReadFile(zst); err != nil {
		return res, err
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
		{&res.Ours, func() error { return disk.DecompressZstd(ctx, zst, out, nil) }},
	}
	for range benchRuns {
		for _, r := range runs {
			_ = os.Remove(out)
			start := time.Now()
			if err := r.run(); err != nil {
				return res, err
			}
			if d := time.Since(start); *r.best == 0 || d < *r.best {
				*r.best = d
			}
		}
	}
	_ = os.Remove(out)
	return res, nil
}
