// Package progress shows how a long step is going: on a terminal one line
// rewritten in place, elsewhere plain lines that read well in a log.
package progress

import (
	"fmt"
	"io"
	"strings"
)

// Line is a status line on W. On a terminal each Show replaces the
// previous text; otherwise each Show is a line of its own.
type Line struct {
	// W receives the output; nil makes the Line silent.
	W io.Writer
	// Terminal selects in-place rewriting with \r.
	Terminal bool

	shown int // length of the text on screen, on a terminal
}

// Show displays s, replacing what the line showed before on a terminal.
func (l *Line) Show(s string) {
	if l.W == nil {
		return
	}
	if !l.Terminal {
		fmt.Fprintln(l.W, s)
		return
	}
	pad := ""
	if n := l.shown - len(s); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	fmt.Fprint(l.W, "\r"+s+pad)
	l.shown = len(s)
}

// End shows s as the line's final text and moves on to a new line.
func (l *Line) End(s string) {
	if l.W == nil {
		return
	}
	if l.Terminal && l.shown > 0 {
		l.Show(s)
		fmt.Fprintln(l.W)
		l.shown = 0
		return
	}
	fmt.Fprintln(l.W, s)
}

// Active reports whether a terminal line is showing text that End or
// Clear has not finished yet.
func (l *Line) Active() bool { return l.shown > 0 }

// Clear erases the line on a terminal, leaving the cursor at its start.
func (l *Line) Clear() {
	if l.W == nil || !l.Terminal || l.shown == 0 {
		return
	}
	fmt.Fprint(l.W, "\r"+strings.Repeat(" ", l.shown)+"\r")
	l.shown = 0
}

// Bytes formats n with a binary unit, e.g. "1.5 GiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
