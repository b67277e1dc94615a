// Command armdev-bench measures armdev's speed targets and prints one
// `name: value` line per figure (see internal/bench). `go run mage.go bench`
// runs it; it is a program of its own so that the benchmarks, the stand-in
// guest and the fake Hydra stay out of the armdev targets binary.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/rsonpath/armdev/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	root, err := os.Getwd()
	if err == nil {
		err = bench.Run(ctx, os.Stdout, bench.Options{Root: root, UnzstdSize: 1 << 30, Log: os.Stderr})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}
