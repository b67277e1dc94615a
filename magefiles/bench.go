//go:build mage

package main

import (
	"context"
	"os"

	"github.com/rsonpath/armdev/internal/bench"
)

// Bench measures the speed targets and prints one `name: value` line per figure.
func Bench(ctx context.Context) error {
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	return bench.Run(ctx, os.Stdout, bench.Options{Root: root, UnzstdSize: 1 << 30, Log: os.Stderr})
}
