package fetch

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
)

// MismatchError reports a file whose size or sha256 differs from what was
// expected.
type MismatchError struct {
	// What is "size" or "sha256".
	What string
	// Got is the file's value.
	Got string
	// Want is the expected value.
	Want string
}

// Error formats the mismatch, e.g. "sha256 mismatch (got …, want …)".
func (e *MismatchError) Error() string {
	return fmt.Sprintf("%s mismatch (got %s, want %s)", e.What, e.Got, e.Want)
}

// Verify checks that the regular file at path has the given size and sha256
// (hex, any case). It returns an error wrapping os.ErrNotExist if the file is
// absent and a *MismatchError if it differs.
func Verify(path string, size int64, sha string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("verify %s: not a regular file", path)
	}
	if fi.Size() != size {
		return &MismatchError{What: "size", Got: fmt.Sprint(fi.Size()), Want: fmt.Sprint(size)}
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("verify %s: %w", path, err)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if want := strings.ToLower(sha); got != want {
		return &MismatchError{What: "sha256", Got: got, Want: want}
	}
	return nil
}
