package disk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"
)

const (
	// readBufSize is the size of reads from the compressed file.
	readBufSize = 4 << 20
	// progressStep is how many compressed bytes pass between progress calls.
	progressStep = 4 << 20
)

// DecompressZstd decompresses the zstd file src into dst with klauspost's
// pure Go decoder, after rewriting the stream's RLE blocks as raw blocks
// (see rleAsRaw); the frames' content checksums are verified.
//
// dst is written sparse (all-zero blocks become holes) and atomically: the
// data goes to a temporary file next to dst that is synced and renamed over
// dst only on success, and removed on error or when ctx is cancelled.
// progress, if not nil, is called every few MiB with the compressed bytes
// read so far and the size of src, possibly from another goroutine but
// never concurrently, and once more at the end.
func DecompressZstd(ctx context.Context, src, dst string, progress func(done, total int64)) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("decompress %s: %w", src, err)
	}
	defer func() { _ = in.Close() }()
	st, err := in.Stat()
	if err != nil {
		return fmt.Errorf("decompress %s: %w", src, err)
	}

	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return fmt.Errorf("decompress %s: %w", src, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()

	cr := &ctxReader{ctx: ctx, r: in, total: st.Size(), progress: progress}
	if err := unzstd(ctx, cr, tmp); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
		return fmt.Errorf("decompress %s: %w", src, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("decompress %s: %w", src, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("decompress %s: %w", src, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("decompress %s: %w", src, err)
	}
	if progress != nil {
		progress(cr.done, cr.total)
	}
	return syncDir(filepath.Dir(dst))
}

// unzstd decodes the zstd stream r into out, sparse, and sets out's size.
//
// RLE blocks are turned into raw ones before the decoder sees them, as the
// decoder is slow at RLE (see rleAsRaw). It runs synchronously on this
// goroutine (concurrency 1): the pipelined mode passes each block through
// three goroutines and channels, which costs more than it gains on two
// cores; the sparse writer's goroutine already takes the writing off this
// one.
func unzstd(ctx context.Context, r io.Reader, out *os.File) error {
	dec, err := zstd.NewReader(newRLEAsRaw(r),
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(false),
	)
	if err != nil {
		return err
	}
	defer dec.Close()
	sw := newSparseWriter(ctx, out)
	_, err = dec.WriteTo(sw)
	if cerr := sw.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer func() { _ = d.Close() }()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// ctxReader stops reading when ctx is done and reports progress.
type ctxReader struct {
	ctx      context.Context
	r        io.Reader
	done     int64
	total    int64
	last     int64
	progress func(done, total int64)
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.done += int64(n)
	if c.progress != nil && c.done-c.last >= progressStep {
		c.last = c.done
		c.progress(c.done, c.total)
	}
	return n, err
}

// ZstdMinSize reads the zstd file at path's first frame header and returns
// the content size it declares: the decompressed size of a single-frame
// file (the `zstd` tool writes it), a lower bound otherwise. known is false
// when the header does not declare it. It reads a few bytes only, so a
// too-small disk can be refused before decompressing gigabytes.
func ZstdMinSize(path string) (size int64, known bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false, fmt.Errorf("read zstd header of %s: %w", path, err)
	}
	defer f.Close()
	buf := make([]byte, zstd.HeaderMaxSize)
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return 0, false, fmt.Errorf("read zstd header of %s: %w", path, err)
	}
	var h zstd.Header
	if err := h.Decode(buf[:n]); err != nil {
		return 0, false, fmt.Errorf("read zstd header of %s: %w", path, err)
	}
	if !h.HasFCS || h.FrameContentSize > 1<<62 {
		return 0, false, nil
	}
	return int64(h.FrameContentSize), true, nil
}
