package fetch

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/rsonpath/armdev/internal/atomicfile"
)

// Lock pins one Hydra build of the SD image: a download is always of exactly
// this file, so a resumed download never mixes bytes of two builds.
type Lock struct {
	// Release is the NixOS release the build was resolved from, e.g. "22.11".
	Release string `json:"release"`
	// BuildID is Hydra's build id.
	BuildID int `json:"build_id"`
	// URL is the absolute download URL of the image.
	URL string `json:"url"`
	// FileName is the image's file name, e.g. "nixos-sd-image-….img.zst".
	FileName string `json:"file_name"`
	// Size is the image's size in bytes.
	Size int64 `json:"size"`
	// SHA256 is the image's sha256 digest in lowercase hex.
	SHA256 string `json:"sha256"`
	// ResolvedAt is when the build was resolved.
	ResolvedAt time.Time `json:"resolved_at"`
}

// Validate reports whether l has everything a download needs.
func (l Lock) Validate() error {
	switch {
	case l.URL == "":
		return errors.New("no url")
	case l.FileName == "" || strings.ContainsAny(l.FileName, `/\`):
		return fmt.Errorf("bad file name %q", l.FileName)
	case l.Size <= 0:
		return fmt.Errorf("bad size %d", l.Size)
	case !isSHA256(l.SHA256):
		return fmt.Errorf("bad sha256 %q", l.SHA256)
	}
	return nil
}

func isSHA256(s string) bool {
	if len(s) != 64 || strings.ToLower(s) != s {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// ReadLock reads the lock file at path. When the file does not exist the
// error wraps os.ErrNotExist.
func ReadLock(path string) (Lock, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Lock{}, fmt.Errorf("read lock file: %w", err)
	}
	var l Lock
	if err := json.Unmarshal(data, &l); err != nil {
		return Lock{}, fmt.Errorf("lock file %s is not valid JSON (%v): delete it to resolve the image again", path, err)
	}
	if err := l.Validate(); err != nil {
		return Lock{}, fmt.Errorf("lock file %s is invalid (%v): delete it to resolve the image again", path, err)
	}
	return l, nil
}

// WriteLock writes l to path as indented JSON, atomically and durably (see
// atomicfile). It creates missing directories.
func WriteLock(path string, l Lock) error {
	if err := l.Validate(); err != nil {
		return fmt.Errorf("write lock file %s: %w", path, err)
	}
	data, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return fmt.Errorf("write lock file %s: %w", path, err)
	}
	data = append(data, '\n')
	if err := atomicfile.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("write lock file: %w", err)
	}
	return nil
}
