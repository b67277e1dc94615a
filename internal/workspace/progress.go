package workspace

import (
	"fmt"
	"io"
	"time"
)

// progress reports a long step: a line rewritten in place on a terminal,
// a plain line every few seconds otherwise.
type progress struct {
	out      io.Writer
	what     string
	terminal bool
	last     time.Time
	every    time.Duration
}

func newProgress(out io.Writer, what string, terminal bool) *progress {
	every := 5 * time.Second
	if terminal {
		every = 200 * time.Millisecond
	}
	return &progress{out: out, what: what, terminal: terminal, every: every, last: time.Now()}
}

// update takes done out of total units.
func (p *progress) update(done, total int64) {
	if time.Since(p.last) < p.every {
		return
	}
	p.last = time.Now()
	pct := 0.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	if p.terminal {
		fmt.Fprintf(p.out, "\r%s: %5.1f%% of %s", p.what, pct, humanBytes(total))
	} else {
		fmt.Fprintf(p.out, "%s: %.0f%% of %s\n", p.what, pct, humanBytes(total))
	}
}

func (p *progress) done() {
	if p.terminal {
		fmt.Fprintf(p.out, "\r%s: done%30s\n", p.what, "")
	}
}
