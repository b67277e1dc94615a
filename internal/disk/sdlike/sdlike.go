// Package sdlike writes files shaped like the NixOS SD image as a
// compressor sees it, for armdev's tests and benchmarks. It is not part of
// the armdev binary.
package sdlike

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
)

// Write writes a sparse file of size bytes at path that looks like an
// SD card image to a compressor: mostly zeros, random 1 MiB chunks making up
// about 15% of it, and some repetitive text. seed makes it reproducible.
func Write(path string, size int64, seed uint64) (err error) {
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
