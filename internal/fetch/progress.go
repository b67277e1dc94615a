package fetch

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// progressPrinter writes download progress: on a terminal one line that
// rewrites itself with \r, elsewhere one plain line per call.
type progressPrinter struct {
	w        io.Writer
	terminal bool
	name     string
	lastLen  int
}

// update prints the state of a transfer of done of total bytes (total <= 0:
// unknown) at rate bytes/s with the given time left (<= 0: unknown).
func (p *progressPrinter) update(done, total int64, rate float64, eta time.Duration) {
	if p.w == nil {
		return
	}
	line := p.name + ": " + humanBytes(done)
	if total > 0 {
		line += fmt.Sprintf(" / %s (%.0f%%)", humanBytes(total), 100*float64(done)/float64(total))
	}
	line += ", " + humanBytes(int64(rate)) + "/s"
	if eta > 0 {
		line += ", ETA " + eta.Round(time.Second).String()
	}
	p.print(line)
}

// print shows line, rewriting the previous one on a terminal.
func (p *progressPrinter) print(line string) {
	if p.w == nil {
		return
	}
	if !p.terminal {
		fmt.Fprintln(p.w, line)
		return
	}
	pad := ""
	if n := p.lastLen - len(line); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	fmt.Fprint(p.w, "\r"+line+pad)
	p.lastLen = len(line)
}

// finish ends the self-rewriting line, if any, and prints a last line.
func (p *progressPrinter) finish(line string) {
	if p.w == nil {
		return
	}
	if p.terminal && p.lastLen > 0 {
		p.print(line)
		fmt.Fprintln(p.w)
		p.lastLen = 0
		return
	}
	fmt.Fprintln(p.w, line)
}

// humanBytes formats n with a binary unit, e.g. "1.5 GiB".
func humanBytes(n int64) string {
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
