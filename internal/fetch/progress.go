package fetch

import (
	"fmt"
	"io"
	"time"

	"github.com/rsonpath/armdev/internal/progress"
)

// progressPrinter writes download progress: on a terminal one line that
// rewrites itself with \r, elsewhere one plain line per call.
type progressPrinter struct {
	line progress.Line
	name string
}

func newProgressPrinter(w io.Writer, terminal bool, name string) *progressPrinter {
	return &progressPrinter{line: progress.Line{W: w, Terminal: terminal}, name: name}
}

// update prints the state of a transfer of done of total bytes (total <= 0:
// unknown) at rate bytes/s with the given time left (<= 0: unknown).
func (p *progressPrinter) update(done, total int64, rate float64, eta time.Duration) {
	line := p.name + ": " + progress.Bytes(done)
	if total > 0 {
		line += fmt.Sprintf(" / %s (%.0f%%)", progress.Bytes(total), 100*float64(done)/float64(total))
	}
	line += ", " + progress.Bytes(int64(rate)) + "/s"
	if eta > 0 {
		line += ", ETA " + eta.Round(time.Second).String()
	}
	p.line.Show(line)
}

// finish ends the self-rewriting line, if any, and prints a last line.
func (p *progressPrinter) finish(line string) { p.line.End(line) }
