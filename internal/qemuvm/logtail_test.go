package qemuvm

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func writeLog(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "serial.log")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTailLines(t *testing.T) {
	var b strings.Builder
	for i := range 50000 { // ~0.5 MB: several read chunks
		fmt.Fprintf(&b, "line %d\r\n", i)
	}
	p := writeLog(t, b.String())
	got, err := TailLines(p, 3)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"line 49997", "line 49998", "line 49999"}; !slices.Equal(got, want) {
		t.Errorf("TailLines = %q, want %q", got, want)
	}
	all, err := TailLines(writeLog(t, "a\nb\n"), 10)
	if err != nil || !slices.Equal(all, []string{"a", "b"}) {
		t.Errorf("short file: %q, %v", all, err)
	}
	if empty, err := TailLines(writeLog(t, ""), 5); err != nil || len(empty) != 0 {
		t.Errorf("empty file: %q, %v", empty, err)
	}
	if _, err := TailLines(filepath.Join(t.TempDir(), "none"), 5); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestLastLine(t *testing.T) {
	p := writeLog(t, "U-Boot 2023.01\r\n\x1b[1;32m[  OK  ]\x1b[0m Started sshd.\r\n\r\nprogress 10%\rprogress 50%\r\n\r\n")
	got, err := LastLine(p)
	if err != nil || got != "progress 50%" {
		t.Errorf("LastLine = %q, %v", got, err)
	}
	lines, _ := TailLines(p, 4)
	if lines[0] != "[  OK  ] Started sshd." {
		t.Errorf("escape sequences kept: %q", lines[0])
	}
	if got, err := LastLine(writeLog(t, "\n\n")); err != nil || got != "" {
		t.Errorf("blank log: %q, %v", got, err)
	}
}
