package workspace

import (
	"fmt"
	"io"
	"time"

	"github.com/rsonpath/armdev/internal/progress"
)

// throttled reports a long step's fraction done, at most every 200 ms on a
// terminal and every 5 s otherwise.
type throttled struct {
	line  progress.Line
	what  string
	last  time.Time
	every time.Duration
}

func newProgress(out io.Writer, what string, terminal bool) *throttled {
	every := 5 * time.Second
	if terminal {
		every = 200 * time.Millisecond
	}
	return &throttled{line: progress.Line{W: out, Terminal: terminal}, what: what, every: every, last: time.Now()}
}

// update takes done out of total units.
func (p *throttled) update(done, total int64) {
	if time.Since(p.last) < p.every {
		return
	}
	p.last = time.Now()
	pct := 0.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	if p.line.Terminal {
		p.line.Show(fmt.Sprintf("%s: %5.1f%% of %s", p.what, pct, progress.Bytes(total)))
	} else {
		p.line.Show(fmt.Sprintf("%s: %.0f%% of %s", p.what, pct, progress.Bytes(total)))
	}
}

// done closes the terminal line; plain output needs no last line.
func (p *throttled) done() {
	if p.line.Terminal {
		p.line.End(p.what + ": done")
	}
}
