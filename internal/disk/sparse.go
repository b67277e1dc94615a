package disk

import (
	"context"
	"errors"
	"os"
	"sync"
)

const (
	// holeBlock is the granularity of hole detection: an all-zero, aligned
	// block of this size is skipped instead of written.
	holeBlock = 4 << 10
	// batchSize is the size of the buffers that carry data to the writing
	// goroutine.
	batchSize = 4 << 20
	// batches is how many such buffers exist: one filling, the others
	// queued or being written.
	batches = 3
	// writebackStep is how many bytes pass between requests to the kernel
	// to start writing them to disk (see startWriteback).
	writebackStep = 32 << 20
)

// zeroBlock is what isZero compares with; it is never written.
var zeroBlock [holeBlock]byte

// errWriterClosed is returned by Write after Close.
var errWriterClosed = errors.New("sparse writer closed")

// sparseWriter writes a stream to a file from offset 0, skipping aligned
// all-zero blocks so that they stay holes.
//
// Write only finds the non-zero data and copies it into a batch; a
// goroutine does the pwrite calls and asks the kernel to start writeback
// as it goes, so that decoding, writing and the final fsync overlap. Close
// must be called: it waits for the writes and sets the file's size.
type sparseWriter struct {
	ctx    context.Context
	f      *os.File
	off    int64  // stream offset of the next byte given to Write
	cur    *batch // filling; nil after Close
	full   chan *batch
	free   chan *batch
	done   chan struct{} // closed when the goroutine has returned
	mu     sync.Mutex
	err    error // the goroutine's first error, under mu
	wrote  int64 // bytes written by the goroutine since the last writeback
	kicked int64 // writeback was started for the file before this offset
}

// batch is data to write: runs of buf at file offsets.
type batch struct {
	buf  []byte
	runs []span
}

// span is buf[pos:end] of a batch, to write at file offset off.
type span struct {
	off      int64
	pos, end int
}

func newSparseWriter(ctx context.Context, f *os.File) *sparseWriter {
	w := &sparseWriter{
		ctx:  ctx,
		f:    f,
		full: make(chan *batch, batches),
		free: make(chan *batch, batches),
		done: make(chan struct{}),
	}
	w.cur = &batch{buf: make([]byte, 0, batchSize)}
	for range batches - 1 {
		w.free <- &batch{buf: make([]byte, 0, batchSize)}
	}
	go w.writeLoop()
	return w
}

// Write queues p's non-zero blocks for writing at the stream offset.
func (w *sparseWriter) Write(p []byte) (int, error) {
	if w.cur == nil {
		return 0, errWriterClosed
	}
	if err := w.ctx.Err(); err != nil {
		return 0, err
	}
	runStart := -1 // start in p of the pending non-zero run
	for i := 0; i < len(p); {
		// Each piece ends at the next block boundary of the file, so
		// that skipped pieces are whole blocks wherever possible.
		end := min(i+holeBlock-int((w.off+int64(i))%holeBlock), len(p))
		if isZero(p[i:end]) {
			if runStart >= 0 {
				if err := w.queue(p[runStart:i], w.off+int64(runStart)); err != nil {
					return 0, err
				}
				runStart = -1
			}
		} else if runStart < 0 {
			runStart = i
		}
		i = end
	}
	if runStart >= 0 {
		if err := w.queue(p[runStart:], w.off+int64(runStart)); err != nil {
			return 0, err
		}
	}
	w.off += int64(len(p))
	return len(p), nil
}

// queue copies p, to be written at off, into batches.
func (w *sparseWriter) queue(p []byte, off int64) error {
	for len(p) > 0 {
		b := w.cur
		if len(b.buf) == cap(b.buf) {
			if err := w.send(); err != nil {
				return err
			}
			continue
		}
		pos := len(b.buf)
		n := min(len(p), cap(b.buf)-pos)
		b.buf = append(b.buf, p[:n]...)
		if k := len(b.runs) - 1; k >= 0 && b.runs[k].end == pos && b.runs[k].off+int64(pos-b.runs[k].pos) == off {
			b.runs[k].end += n // continues the previous run
		} else {
			b.runs = append(b.runs, span{off: off, pos: pos, end: pos + n})
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// send hands the current batch to the goroutine and takes a free one.
func (w *sparseWriter) send() error {
	w.full <- w.cur // never blocks: full has room for every batch
	select {
	case w.cur = <-w.free:
	case <-w.ctx.Done():
		w.cur = &batch{} // nothing for Close to send
		return w.ctx.Err()
	}
	return w.failed()
}

// writeLoop writes the batches it receives until full is closed; after an
// error it only recycles them.
func (w *sparseWriter) writeLoop() {
	defer close(w.done)
	for b := range w.full {
		if w.failed() == nil {
			if err := w.write(b); err != nil {
				w.mu.Lock()
				w.err = err
				w.mu.Unlock()
			}
		}
		b.buf, b.runs = b.buf[:0], b.runs[:0]
		w.free <- b
	}
}

// failed returns the writing goroutine's first error.
func (w *sparseWriter) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// write writes a batch and starts writeback after every writebackStep
// bytes.
func (w *sparseWriter) write(b *batch) error {
	for _, r := range b.runs {
		if _, err := w.f.WriteAt(b.buf[r.pos:r.end], r.off); err != nil {
			return err
		}
		w.wrote += int64(r.end - r.pos)
	}
	if w.wrote >= writebackStep && len(b.runs) > 0 {
		// Everything before the end of this batch was written.
		last := b.runs[len(b.runs)-1]
		end := last.off + int64(last.end-last.pos)
		startWriteback(w.f, w.kicked, end-w.kicked)
		w.kicked, w.wrote = end, 0
	}
	return nil
}

// Close writes what is queued, waits for the goroutine, and sets the file's
// size to the stream's length. It returns the first error of the writes.
func (w *sparseWriter) Close() error {
	if w.cur == nil {
		return errWriterClosed
	}
	if len(w.cur.runs) > 0 {
		w.full <- w.cur
	}
	w.cur = nil
	close(w.full)
	<-w.done
	if err := w.failed(); err != nil {
		return err
	}
	return w.f.Truncate(w.off)
}

// isZero reports whether b, at most holeBlock long, holds only zero bytes.
func isZero(b []byte) bool {
	return string(b) == string(zeroBlock[:len(b)])
}
