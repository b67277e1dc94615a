package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cavaliergopher/grab/v3"

	"github.com/rsonpath/armdev/internal/atomicfile"
	"github.com/rsonpath/armdev/internal/progress"
)

// DownloadOptions tune Download.
type DownloadOptions struct {
	// Progress receives progress lines; nil means silent.
	Progress io.Writer
	// Terminal makes progress one line rewritten in place with \r instead of
	// a new line per report.
	Terminal bool
	// Interval is the time between progress reports; zero means 500 ms on a
	// terminal and 5 s otherwise.
	Interval time.Duration
	// Client is the HTTP client; nil means a plain http.Client.
	Client *http.Client
}

// errRangeIgnored reports a server that answered a ranged request with
// something else than the requested range.
var errRangeIgnored = errors.New("server ignored the Range request")

// Download makes dest a verified copy of the file lock pins.
//
// If dest already has the lock's size and sha256 it returns nil without any
// network request; a dest that does not verify is deleted first. Bytes go to
// dest+".part" (with a small dest+".part.sha256" naming the file they belong
// to, so a partial of another build is never resumed), and dest appears, by
// rename, only after the size and sha256 have been verified: dest is never a
// corrupt file. A partial file is resumed when the server advertises
// Accept-Ranges: bytes and really answers 206; otherwise the download starts
// from zero (grab's trap of appending a whole 200 body to the partial file is
// detected and undone). On a checksum mismatch the partial file is deleted and
// the error says so. When ctx is cancelled the partial file is kept for the
// next call to resume. The file's mtime is the local time of the download
// (Last-Modified is ignored, so a newer download always looks newer).
func Download(ctx context.Context, lock Lock, dest string, opts DownloadOptions) error {
	if err := lock.Validate(); err != nil {
		return fmt.Errorf("download %s: invalid lock: %w", dest, err)
	}
	d := &downloader{
		lock:    lock,
		dest:    dest,
		part:    dest + ".part",
		sidecar: dest + ".part.sha256",
		client:  opts.Client,
		p:       newProgressPrinter(opts.Progress, opts.Terminal, lock.FileName),
		every:   opts.Interval,
	}
	if d.client == nil {
		d.client = &http.Client{}
	}
	if d.every <= 0 {
		d.every = 5 * time.Second
		if opts.Terminal {
			d.every = 500 * time.Millisecond
		}
	}
	err := d.run(ctx)
	if errors.Is(err, syscall.ENOSPC) {
		return d.noSpace(err)
	}
	return err
}

// noSpace turns a write that found the disk full, wherever it happened,
// into the one thing to do: "run again" alone would fail the same way.
func (d *downloader) noSpace(err error) error {
	what := "no space left on the device"
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) && pe.Path != d.part {
		what += " to write " + pe.Path
	}
	kept := "nothing kept"
	if fi, statErr := os.Stat(d.part); statErr == nil && fi.Size() > 0 {
		kept = fmt.Sprintf("%s of %s kept in %s", progress.Bytes(fi.Size()), progress.Bytes(d.lock.Size), d.part)
	}
	return fmt.Errorf("download of %s: %s (%s): free space in %s, or set ARMDEV_STATE_DIR to a folder on a bigger disk, and run again",
		d.lock.FileName, what, kept, filepath.Dir(d.dest))
}

type downloader struct {
	lock                Lock
	dest, part, sidecar string
	client              *http.Client
	p                   *progressPrinter
	every               time.Duration
}

func (d *downloader) run(ctx context.Context) error {
	name := d.lock.FileName
	err := Verify(d.dest, d.lock.Size, d.lock.SHA256)
	if err == nil {
		_ = os.Remove(d.sidecar)
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		if rmErr := os.Remove(d.dest); rmErr != nil && !errors.Is(rmErr, fs.ErrNotExist) {
			return fmt.Errorf("download of %s: %s does not verify (%v) and cannot be removed: %w", name, d.dest, err, rmErr)
		}
		d.p.finish(fmt.Sprintf("%s: existing %s does not verify (%v): deleted, downloading again", name, d.dest, err))
	}
	if err := os.MkdirAll(filepath.Dir(d.dest), 0o755); err != nil {
		return fmt.Errorf("download of %s: %w", name, err)
	}
	resume, done, err := d.preparePartial(ctx)
	if err != nil || done {
		return err
	}
	for attempt := 0; ; attempt++ {
		if !resume {
			if err := d.removePartial(); err != nil {
				return err
			}
		}
		if err := atomicfile.WriteFile(d.sidecar, []byte(d.want()), 0o644); err != nil {
			return fmt.Errorf("download of %s: %w", name, err)
		}
		resumed, err := d.fetch(ctx, resume)
		if errors.Is(err, errRangeIgnored) && attempt == 0 {
			d.p.finish(fmt.Sprintf("%s: the server ignored the resume request: starting over", name))
			resume = false
			continue
		}
		if err != nil {
			return d.transferError(ctx, err)
		}
		if err := Verify(d.part, d.lock.Size, d.lock.SHA256); err != nil {
			_ = d.removePartial()
			var mm *MismatchError
			if errors.As(err, &mm) && resumed && attempt == 0 {
				d.p.finish(fmt.Sprintf("%s: resumed download does not verify (%v): starting over", name, err))
				resume = false
				continue
			}
			if errors.As(err, &mm) {
				return fmt.Errorf("download of %s: %v: deleted; run again", name, err)
			}
			return fmt.Errorf("download of %s: %w", name, err)
		}
		if err := os.Rename(d.part, d.dest); err != nil {
			return fmt.Errorf("download of %s: %w", name, err)
		}
		_ = os.Remove(d.sidecar)
		return nil
	}
}

// want is the sidecar content naming the file the partial bytes belong to.
func (d *downloader) want() string {
	return fmt.Sprintf("%s  %d\n", d.lock.SHA256, d.lock.Size)
}

func (d *downloader) removePartial() error {
	for _, p := range []string{d.part, d.sidecar} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("download of %s: remove partial file: %w", d.lock.FileName, err)
		}
	}
	return nil
}

// preparePartial decides what to do with an existing partial file: resume it
// (true), finish with it (done: it was complete and verified), or start from
// zero (false).
func (d *downloader) preparePartial(ctx context.Context) (resume, done bool, err error) {
	name := d.lock.FileName
	fi, err := os.Stat(d.part)
	if errors.Is(err, fs.ErrNotExist) {
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("download of %s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return false, false, fmt.Errorf("download of %s: %s is not a regular file: remove it", name, d.part)
	}
	if got, err := os.ReadFile(d.sidecar); err == nil && string(got) != d.want() {
		d.p.finish(fmt.Sprintf("%s: partial download belongs to another build: starting over", name))
		return false, false, nil
	}
	switch size := fi.Size(); {
	case size == 0:
		return false, false, nil
	case size > d.lock.Size:
		return false, false, nil
	case size == d.lock.Size:
		if Verify(d.part, d.lock.Size, d.lock.SHA256) != nil {
			return false, false, nil
		}
		if err := os.Rename(d.part, d.dest); err != nil {
			return false, false, fmt.Errorf("download of %s: %w", name, err)
		}
		_ = os.Remove(d.sidecar)
		return false, true, nil
	}
	ok, err := d.acceptsRanges(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return false, false, fmt.Errorf("download of %s interrupted (%s kept): run again to resume: %w", name, d.part, ctx.Err())
		}
		return false, false, fmt.Errorf("download of %s: cannot ask the server whether it can resume (%v); the partial file %s (%s of %s) is kept: run again when the server answers, or delete it to start over",
			name, err, d.part, progress.Bytes(fi.Size()), progress.Bytes(d.lock.Size))
	}
	if !ok {
		d.p.finish(fmt.Sprintf("%s: the server cannot resume downloads: starting over", name))
	}
	return ok, false, nil
}

// acceptsRanges asks the server (HEAD) whether it advertises byte ranges.
func (d *downloader) acceptsRanges(ctx context.Context) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, d.lock.URL, nil)
	if err != nil {
		return false, err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("HEAD %s: %s", d.lock.URL, resp.Status)
	}
	return strings.EqualFold(resp.Header.Get("Accept-Ranges"), "bytes"), nil
}

// fetch runs one grab transfer into the partial file, resuming it if resume
// is set, and reports whether it did resume.
func (d *downloader) fetch(ctx context.Context, resume bool) (bool, error) {
	req, err := grab.NewRequest(d.part, d.lock.URL)
	if err != nil {
		return false, fmt.Errorf("download of %s: %w", d.lock.FileName, err)
	}
	req = req.WithContext(ctx)
	req.Size = d.lock.Size
	req.NoResume = !resume
	req.IgnoreRemoteTime = true
	var from int64
	if resume {
		if fi, err := os.Stat(d.part); err == nil {
			from = fi.Size()
		}
	}
	req.BeforeCopy = func(r *grab.Response) error {
		if !r.DidResume {
			return nil
		}
		// grab checks neither the status nor Content-Range of a resumed
		// request: a 200 would be appended to the partial file.
		if r.HTTPResponse.StatusCode != http.StatusPartialContent ||
			!strings.HasPrefix(r.HTTPResponse.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", from)) {
			return errRangeIgnored
		}
		return nil
	}
	c := &grab.Client{HTTPClient: d.client, UserAgent: "armdev", BufferSize: 128 << 10}
	if resume {
		d.p.finish(fmt.Sprintf("%s: resuming at %s of %s from %s", d.lock.FileName, progress.Bytes(from), progress.Bytes(d.lock.Size), d.lock.URL))
	} else {
		d.p.finish(fmt.Sprintf("%s: downloading %s from %s", d.lock.FileName, progress.Bytes(d.lock.Size), d.lock.URL))
	}
	resp := c.Do(req)
	t := time.NewTicker(d.every)
	defer t.Stop()
	report := func() {
		var eta time.Duration
		if e := resp.ETA(); !e.IsZero() {
			eta = time.Until(e)
		}
		d.p.update(resp.BytesComplete(), d.lock.Size, resp.BytesPerSecond(), eta)
	}
wait:
	for {
		select {
		case <-resp.Done:
			break wait
		case <-t.C:
			report()
		}
	}
	err = resp.Err()
	if resp.DidResume && resp.HTTPResponse != nil && resp.HTTPResponse.StatusCode != http.StatusPartialContent &&
		(err == nil || errors.Is(err, grab.ErrBadLength) || errors.Is(err, errRangeIgnored)) {
		return true, errRangeIgnored
	}
	if err != nil {
		if d.p.line.Active() {
			d.p.finish(fmt.Sprintf("%s: stopped at %s", d.lock.FileName, progress.Bytes(resp.BytesComplete())))
		}
		return resp.DidResume, err
	}
	d.p.finish(fmt.Sprintf("%s: downloaded %s in %s", d.lock.FileName, progress.Bytes(resp.Size()), resp.Duration().Round(time.Millisecond)))
	return resp.DidResume, nil
}

// transferError turns a failed transfer into a one-line error saying what to
// do.
func (d *downloader) transferError(ctx context.Context, err error) error {
	name := d.lock.FileName
	var have int64
	if fi, statErr := os.Stat(d.part); statErr == nil {
		have = fi.Size()
	}
	var status grab.StatusCodeError
	switch {
	case errors.Is(err, syscall.ENOSPC):
		return d.noSpace(err)
	case ctx.Err() != nil:
		return fmt.Errorf("download of %s interrupted at %s of %s (%s kept): run again to resume: %w",
			name, progress.Bytes(have), progress.Bytes(d.lock.Size), d.part, ctx.Err())
	case errors.As(err, &status):
		return fmt.Errorf("download of %s: server answered %d %s for %s: resolve the image again",
			name, int(status), http.StatusText(int(status)), d.lock.URL)
	case errors.Is(err, grab.ErrBadLength):
		return fmt.Errorf("download of %s: the server's file is not the %d bytes the lock records: resolve the image again", name, d.lock.Size)
	case errors.Is(err, errRangeIgnored):
		return fmt.Errorf("download of %s: the server ignored the resume request twice: run again", name)
	}
	return fmt.Errorf("download of %s stopped at %s of %s (%v): run again to continue", name, progress.Bytes(have), progress.Bytes(d.lock.Size), err)
}
