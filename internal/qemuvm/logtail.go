package qemuvm

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

// TailLines returns the last n lines of the file at path (a serial log, say), made
// printable: terminal escape sequences and control characters are removed, and of
// text overwritten with a carriage return only the last version is kept. It reads
// only the end of the file.
func TailLines(path string, n int) ([]string, error) {
	return tailLines(path, 0, n)
}

// tailLines is TailLines for the part of the file after its first from bytes.
func tailLines(path string, from int64, n int) ([]string, error) {
	if n <= 0 {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tail log: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("tail log: %w", err)
	}
	const chunk = 64 << 10
	var data []byte
	off := fi.Size()
	for off > from && bytes.Count(data, []byte{'\n'}) <= n {
		size := min(chunk, off-from)
		off -= size
		buf := make([]byte, size)
		if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
			return nil, fmt.Errorf("tail log: %w", err)
		}
		data = append(buf, data...)
	}
	text := strings.TrimSuffix(string(data), "\n")
	if text == "" {
		return nil, nil
	}
	lines := strings.Split(text, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		lines[i] = printable(l)
	}
	return lines, nil
}

// LastLine returns the last non-blank line of the file at path, made printable as by
// TailLines, or "" when there is none. It suits a one-line boot progress display.
func LastLine(path string) (string, error) {
	lines, err := TailLines(path, 20)
	if err != nil {
		return "", err
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.TrimSpace(lines[i]) != "" {
			return lines[i], nil
		}
	}
	return "", nil
}

var escapeRE = regexp.MustCompile(`\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[@-Z\\-_])`)

// printable removes escape sequences and control characters from one line and keeps
// the text after the last carriage return.
func printable(l string) string {
	l = escapeRE.ReplaceAllString(l, "")
	l = strings.TrimRight(l, "\r")
	if i := strings.LastIndexByte(l, '\r'); i >= 0 {
		l = l[i+1:]
	}
	return strings.Map(func(r rune) rune {
		if r == '\t' || (r >= 0x20 && r != 0x7f && !(r >= 0x80 && r < 0xa0)) {
			return r
		}
		return -1
	}, l)
}
