//go:build mage

package main

import (
	"github.com/magefile/mage/mg"
	"github.com/magefile/mage/sh"
)

// Bench measures the speed targets and prints one `name: value` line per figure.
func Bench() error {
	// A separate program: the benchmarks bring the stand-in guest, the fake
	// Hydra and the test harness, none of which belongs in the targets binary.
	return sh.RunV(mg.GoCmd(), "run", "./internal/bench/cmd/armdev-bench")
}
