// Package bench measures armdev's speed targets and prints one
// `name: value` line per figure; ratios are against a reference measured
// in the same run.
package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rsonpath/armdev/internal/harness"
)

// Options choose what to measure.
type Options struct {
	// Root is the armdev checkout.
	Root string
	// UnzstdSize is the SD-like image size for the decompression figure.
	UnzstdSize int64
	// Log receives the progress of the runs; the figures go to Run's out.
	Log io.Writer
}

// Run measures every figure and prints them to out.
func Run(ctx context.Context, out io.Writer, opts Options) error {
	work, err := os.MkdirTemp("", "armdev-bench-")
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(work)

	u, err := benchUnzstd(ctx, work, opts.UnzstdSize)
	if err != nil {
		return fmt.Errorf("bench unzstd: %w", err)
	}
	fmt.Fprintf(out, "unzstd_vs_cli_ratio: %.2f\n", u.Ours.Seconds()/u.CLI.Seconds())
	fmt.Fprintf(out, "unzstd_seconds: %.2f\n", u.Ours.Seconds())
	fmt.Fprintf(out, "unzstd_cli_seconds: %.2f\n", u.CLI.Seconds())

	if missing := harness.Prerequisites(); len(missing) > 0 {
		return fmt.Errorf("bench: the guest figures need: %s", strings.Join(missing, "; "))
	}
	return guestFigures(ctx, out, work, opts)
}

// guestFigures measures the figures that need the stand-in guest, through
// the compiled targets binary (as `just` runs them).
func guestFigures(ctx context.Context, out io.Writer, work string, opts Options) error {
	h, err := harness.New(ctx, opts.Root, filepath.Join(work, "ws"), opts.Log)
	if err != nil {
		return err
	}
	defer h.Close()
	bin := filepath.Join(work, "armdev-targets")
	if r := h.Command(ctx, nil, "go", "run", "mage.go", "-compile", bin); r.Code != 0 {
		return fmt.Errorf("compile targets: %s", r)
	}
	t := targets{h: h, bin: bin}
	run := func(target string, extra ...string) (harness.Result, error) {
		return t.run(ctx, target, extra...)
	}
	if _, err := run("init"); err != nil {
		return err
	}
	best := time.Duration(1 << 62)
	for range 3 {
		r, err := run("image")
		if err != nil {
			return err
		}
		best = min(best, r.Took)
	}
	fmt.Fprintf(out, "noop_image_seconds: %.3f\n", best.Seconds())

	// Boot to SSH-ready: the tool's flags against the original's -cpu max.
	boot := func(extra ...string) (took, afterSSHD time.Duration, err error) {
		sshd := watchBanner(ctx, h.Port)
		r, err := run("start", extra...)
		if err != nil {
			return 0, 0, err
		}
		end := time.Now()
		accepted := <-sshd
		if _, err := run("kill"); err != nil {
			return 0, 0, err
		}
		if accepted.IsZero() {
			return r.Took, 0, fmt.Errorf("never saw the guest's SSH banner")
		}
		return r.Took, end.Sub(accepted), nil
	}
	var ours, seed, ready []time.Duration
	for range 2 {
		t, after, err := boot()
		if err != nil {
			return err
		}
		ours, ready = append(ours, t), append(ready, after)
		t, _, err = boot("ARMDEV_CPU=max")
		if err != nil {
			return err
		}
		seed = append(seed, t)
	}
	fmt.Fprintf(out, "boot_seconds: %.1f\n", minOf(ours).Seconds())
	fmt.Fprintf(out, "boot_seed_flags_seconds: %.1f\n", minOf(seed).Seconds())
	fmt.Fprintf(out, "boot_ratio_vs_seed_flags: %.2f\n", minOf(ours).Seconds()/minOf(seed).Seconds())
	fmt.Fprintf(out, "ready_after_sshd_seconds: %.2f\n", minOf(ready).Seconds())

	// The dev shell's figures while the guest's cache is still cold: the
	// reset below would empty it anyway.
	if err := sshFigures(ctx, out, t, opts.Root); err != nil {
		return err
	}

	r, err := run("reset", "ARMDEV_YES=1")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "reset_seconds: %.2f\n", r.Took.Seconds())
	return nil
}

func minOf(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds[1:] {
		m = min(m, d)
	}
	return m
}

// watchBanner polls 127.0.0.1:port until the guest's sshd sends its
// "SSH-" banner, and delivers when that first happened (zero if never).
func watchBanner(ctx context.Context, port int) <-chan time.Time {
	ch := make(chan time.Time, 1)
	go func() {
		deadline := time.Now().Add(10 * time.Minute)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				buf := make([]byte, 4)
				n, _ := io.ReadFull(c, buf)
				c.Close()
				if n == 4 && string(buf) == "SSH-" {
					ch <- time.Now()
					return
				}
			}
			time.Sleep(25 * time.Millisecond) // polling interval, not synchronisation
		}
		ch <- time.Time{}
	}()
	return ch
}
