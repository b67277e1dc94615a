// Package stamp decides whether a build step's inputs changed since the step
// last ran: file timestamps first (mage's target package, no reading), file
// contents second (sha256), so that `touch` or a fresh `git checkout` of
// unchanged files rebuilds nothing.
package stamp

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/magefile/mage/target"

	"github.com/rsonpath/armdev/internal/atomicfile"
)

// Stamp is a file that records the digest of a step's inputs when the step
// last succeeded.
type Stamp struct {
	// Path is the stamp file.
	Path string
	// Inputs are the files and directories (walked recursively) the step reads.
	Inputs []string
}

// Check reports the inputs' digest and whether it equals the recorded one.
// When the stamp is newer than every input (by mtime) the recorded digest is
// trusted without reading anything. When only the timestamps moved, the
// stamp is touched so that the next check takes the fast path again.
func (s Stamp) Check() (digest string, unchanged bool, err error) {
	recorded, err := os.ReadFile(s.Path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", false, fmt.Errorf("read stamp %s: %w", s.Path, err)
	}
	if err == nil {
		newer, err := target.Dir(s.Path, s.Inputs...)
		if err != nil {
			return "", false, fmt.Errorf("compare timestamps for %s: %w", s.Path, err)
		}
		if !newer {
			return strings.TrimSpace(string(recorded)), true, nil
		}
	}
	digest, err = Digest(s.Inputs...)
	if err != nil {
		return "", false, err
	}
	if strings.TrimSpace(string(recorded)) != digest {
		return digest, false, nil
	}
	now := time.Now()
	if err := os.Chtimes(s.Path, now, now); err != nil {
		return "", false, fmt.Errorf("touch stamp %s: %w", s.Path, err)
	}
	return digest, true, nil
}

// Current returns the inputs' digest, recording it when it changed: for
// stamps that cache a digest rather than guard a build step.
func (s Stamp) Current() (string, error) {
	digest, same, err := s.Check()
	if err != nil || same {
		return digest, err
	}
	return digest, s.Record(digest)
}

// Record writes digest as the stamp's content, atomically and durably.
func (s Stamp) Record(digest string) error {
	return atomicfile.WriteFile(s.Path, []byte(digest+"\n"), 0o644)
}

// Digest hashes the inputs: for each file (directories walked in lexical
// order) its path relative to the input, its permission bits and its
// content; symlinks by their target. Timestamps do not count.
func Digest(inputs ...string) (string, error) {
	h := sha256.New()
	for _, in := range inputs {
		fmt.Fprintf(h, "input %d\n", len(in))
		err := filepath.WalkDir(in, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(in, path)
			info, err := d.Info()
			if err != nil {
				return err
			}
			switch {
			case d.IsDir():
				fmt.Fprintf(h, "dir %q %o\n", rel, info.Mode().Perm())
			case d.Type()&fs.ModeSymlink != 0:
				link, err := os.Readlink(path)
				if err != nil {
					return err
				}
				fmt.Fprintf(h, "link %q %q\n", rel, link)
			case d.Type().IsRegular():
				fmt.Fprintf(h, "file %q %o %d\n", rel, info.Mode().Perm(), info.Size())
				f, err := os.Open(path)
				if err != nil {
					return err
				}
				_, err = io.Copy(h, f)
				f.Close()
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return "", fmt.Errorf("hash %s: %w", in, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
