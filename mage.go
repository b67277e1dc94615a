//go:build ignore

// Zero-install entry point: `go run mage.go <target>` runs armdev's targets
// with the mage version pinned in go.mod, no mage installation needed.
package main

import (
	"os"

	"github.com/magefile/mage/mage"
)

func main() { os.Exit(mage.Main()) }
