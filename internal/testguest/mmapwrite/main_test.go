//go:build linux

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWritesThroughASharedMapping(t *testing.T) {
	file := filepath.Join(t.TempDir(), "note")
	// Longer than the file will be: the mapping must resize it.
	if err := os.WriteFile(file, []byte("an older and much longer text\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	if code := run([]string{file, "written through mmap\n"}, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if got, err := os.ReadFile(file); err != nil || string(got) != "written through mmap\n" {
		t.Errorf("file holds %q, %v", got, err)
	}
}

func TestCreatesTheFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "new")
	var stderr bytes.Buffer
	if code := run([]string{file, "x"}, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if got, err := os.ReadFile(file); err != nil || string(got) != "x" {
		t.Errorf("file holds %q, %v", got, err)
	}
}

func TestNamesTheFailingCallAndErrno(t *testing.T) {
	for name, tc := range map[string]struct {
		file string
		want string
	}{
		"no such folder": {filepath.Join(t.TempDir(), "missing", "f"), "open "},
		"a folder":       {t.TempDir(), "open "},
		// /dev/zero opens read-write but cannot be sized.
		"a device": {"/dev/zero", "ftruncate /dev/zero: errno 22 EINVAL"},
	} {
		t.Run(name, func(t *testing.T) {
			var stderr bytes.Buffer
			if code := run([]string{tc.file, "x"}, &stderr); code != 1 {
				t.Fatalf("exit %d, want 1: %s", code, stderr.String())
			}
			msg := stderr.String()
			if !strings.HasPrefix(msg, "armdev-mmap-write: "+tc.want) || !strings.Contains(msg, "errno ") {
				t.Errorf("message %q, want it to start with %q and name the errno", msg, "armdev-mmap-write: "+tc.want)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"f"}, {"f", ""}, {"f", "a", "b"}} {
		var stderr bytes.Buffer
		if code := run(args, &stderr); code != 2 || !strings.Contains(stderr.String(), "usage:") {
			t.Errorf("run(%q) = %d, %q; want 2 and the usage", args, code, stderr.String())
		}
	}
}
