package disk

import (
	"context"
	"os"
	"strconv"
	"testing"
)

// TestBenchUnzstd prints the decompression timings when ARMDEV_BENCH_SIZE
// (bytes) is set; it is a measurement, not a check.
func TestBenchUnzstd(t *testing.T) {
	s := os.Getenv("ARMDEV_BENCH_SIZE")
	if s == "" {
		t.Skip("set ARMDEV_BENCH_SIZE=<bytes> to measure")
	}
	size, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("ARMDEV_BENCH_SIZE: %v", err)
	}
	r, err := BenchUnzstd(context.Background(), t.TempDir(), size)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ours %v  zstd -d %v  ratio %.2f", r.Ours, r.CLI, r.Ratio())
}
