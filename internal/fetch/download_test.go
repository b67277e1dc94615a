package fetch_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rsonpath/armdev/internal/fakehydra"
	"github.com/rsonpath/armdev/internal/fetch"

	"github.com/rsonpath/armdev/internal/testutil"
)

const imageSize = 3<<20 + 12345 // a few MiB, not a multiple of any buffer

// fixture is a fake Hydra with one build, its lock and a destination path.
type fixture struct {
	srv  *fakehydra.Server
	data []byte
	lock fetch.Lock
	dest string
}

func newFixture(t *testing.T, opts fakehydra.Options) *fixture {
	t.Helper()
	srv := newServer(t)
	srv.SetOptions(opts)
	data := randomBytes(t, imageSize)
	srv.AddBuild("22.11", imageName, data)
	lock, err := fetch.Hydra{BaseURL: srv.URL(), Client: srv.Client()}.Resolve(t.Context(), "22.11")
	if err != nil {
		t.Fatal(err)
	}
	srv.ResetLog()
	return &fixture{srv: srv, data: data, lock: lock, dest: filepath.Join(t.TempDir(), "dl", imageName)}
}

func (f *fixture) download(ctx context.Context, opts fetch.DownloadOptions) error {
	if opts.Client == nil {
		opts.Client = f.srv.Client()
	}
	return fetch.Download(ctx, f.lock, f.dest, opts)
}

// writePartial puts the first n bytes of want at dest.part.
func (f *fixture) writePartial(t *testing.T, want []byte, n int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(f.dest), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.dest+".part", want[:n], 0o644); err != nil {
		t.Fatal(err)
	}
}

// requireVerified fails unless dest holds exactly the build's bytes and no
// partial files are left.
func (f *fixture) requireVerified(t *testing.T) {
	t.Helper()
	got, err := os.ReadFile(f.dest)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, f.data) {
		t.Fatalf("dest has %d bytes that differ from the build's %d", len(got), len(f.data))
	}
	if err := fetch.Verify(f.dest, f.lock.Size, f.lock.SHA256); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{f.dest + ".part", f.dest + ".part.sha256"} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left behind (%v)", filepath.Base(p), err)
		}
	}
}

func (f *fixture) requireNoDest(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(f.dest); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("dest exists after a failed download (%v)", err)
	}
}

func (f *fixture) downloadRequests() []fakehydra.Request {
	var out []fakehydra.Request
	for _, r := range f.srv.Log() {
		if strings.Contains(r.Path, "/download/") {
			out = append(out, r)
		}
	}
	return out
}

func TestDownloadWithoutRangeSupport(t *testing.T) {
	f := newFixture(t, fakehydra.Options{})
	if err := f.download(t.Context(), fetch.DownloadOptions{}); err != nil {
		t.Fatal(err)
	}
	f.requireVerified(t)
	if got := f.srv.Requests(); len(got) != 1 || !strings.HasPrefix(got[0], "GET /build/") {
		t.Errorf("requests = %q, want one GET", got)
	}
	fi, err := os.Stat(f.dest)
	if err != nil {
		t.Fatal(err)
	}
	if fi.ModTime().Before(time.Now().Add(-time.Hour)) {
		t.Errorf("mtime %v comes from Last-Modified, want the download time", fi.ModTime())
	}
}

func TestDownloadWithRangeSupport(t *testing.T) {
	f := newFixture(t, fakehydra.Options{Ranges: true})
	if err := f.download(t.Context(), fetch.DownloadOptions{}); err != nil {
		t.Fatal(err)
	}
	f.requireVerified(t)
	if got := f.srv.RangeRequests(); len(got) != 0 {
		t.Errorf("fresh download sent Range %q", got)
	}
}

func TestDownloadResumesPartial(t *testing.T) {
	f := newFixture(t, fakehydra.Options{Ranges: true})
	const n = 1<<20 + 7
	f.writePartial(t, f.data, n)
	if err := f.download(t.Context(), fetch.DownloadOptions{}); err != nil {
		t.Fatal(err)
	}
	f.requireVerified(t)
	want := fmt.Sprintf("bytes=%d-", n)
	if got := f.srv.RangeRequests(); len(got) != 1 || got[0] != want {
		t.Errorf("Range requests = %q, want [%q]", got, want)
	}
}

func TestDownloadRestartsPartialWithoutRangeSupport(t *testing.T) {
	f := newFixture(t, fakehydra.Options{})
	f.writePartial(t, f.data, 1<<20)
	if err := f.download(t.Context(), fetch.DownloadOptions{}); err != nil {
		t.Fatal(err)
	}
	f.requireVerified(t)
	if got := f.srv.RangeRequests(); len(got) != 0 {
		t.Errorf("sent Range %q to a server without range support", got)
	}
}

// The grab trap: HEAD advertises ranges, the GET answers 200 with the whole
// body. Appending it to the partial file would give a corrupt image.
func TestDownloadServerIgnoresRange(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			f := newFixture(t, fakehydra.Options{IgnoreRange200: true, Chunked: chunked})
			const n = 1 << 20
			f.writePartial(t, f.data, n)
			if err := f.download(t.Context(), fetch.DownloadOptions{}); err != nil {
				t.Fatal(err)
			}
			f.requireVerified(t)
			var gets, ranged int
			for _, r := range f.downloadRequests() {
				if r.Method == "GET" {
					gets++
					if r.Range != "" {
						ranged++
					}
				}
			}
			if ranged != 1 || gets != 2 {
				t.Errorf("GETs = %d (%d ranged), want a ranged one then a full one: %+v", gets, ranged, f.downloadRequests())
			}
		})
	}
}

func TestDownloadTruncatedBody(t *testing.T) {
	f := newFixture(t, fakehydra.Options{TruncateAt: imageSize / 2})
	err := f.download(t.Context(), fetch.DownloadOptions{})
	if err == nil || !strings.Contains(err.Error(), "run again") {
		t.Fatalf("Download of a truncated body: %v, want an error saying to run again", err)
	}
	f.requireNoDest(t)
	fi, statErr := os.Stat(f.dest + ".part")
	if statErr != nil || fi.Size() == 0 || fi.Size() > imageSize/2 {
		t.Fatalf("partial file: %v, %v; want 1 to %d bytes", fi, statErr, imageSize/2)
	}

	// Once the server behaves, the next run resumes and verifies.
	f.srv.SetOptions(fakehydra.Options{Ranges: true})
	f.srv.ResetLog()
	if err := f.download(t.Context(), fetch.DownloadOptions{}); err != nil {
		t.Fatal(err)
	}
	f.requireVerified(t)
	if got := f.srv.RangeRequests(); len(got) != 1 || got[0] != fmt.Sprintf("bytes=%d-", fi.Size()) {
		t.Errorf("Range requests = %q, want one from %d", got, fi.Size())
	}
}

func TestDownloadWrongChecksum(t *testing.T) {
	f := newFixture(t, fakehydra.Options{WrongSHA: true})
	// The fixture resolved with WrongSHA, so the lock holds a wrong sum.
	if f.lock.SHA256 == sha(f.data) {
		t.Fatal("fake did not advertise a wrong sha256")
	}
	err := f.download(t.Context(), fetch.DownloadOptions{})
	if err == nil {
		t.Fatal("Download with a wrong checksum succeeded")
	}
	for _, w := range []string{"sha256 mismatch", sha(f.data), f.lock.SHA256, "deleted", "run again", imageName} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
	f.requireNoDest(t)
	if _, err := os.Stat(f.dest + ".part"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("partial file kept after a checksum mismatch (%v)", err)
	}
}

func TestDownloadWrongSize(t *testing.T) {
	f := newFixture(t, fakehydra.Options{})
	f.lock.Size++
	err := f.download(t.Context(), fetch.DownloadOptions{})
	if err == nil || !strings.Contains(err.Error(), "resolve the image again") {
		t.Fatalf("Download with a wrong size: %v", err)
	}
	f.requireNoDest(t)
}

// A corrupt partial file (no record of its origin) that the server resumes
// fails verification; Download starts over once and succeeds.
func TestDownloadCorruptPartialStartsOver(t *testing.T) {
	f := newFixture(t, fakehydra.Options{Ranges: true})
	f.writePartial(t, randomBytes(t, 1<<20), 1<<20)
	var out testutil.SyncBuffer
	if err := f.download(t.Context(), fetch.DownloadOptions{Progress: &out}); err != nil {
		t.Fatal(err)
	}
	f.requireVerified(t)
	if !strings.Contains(out.String(), "starting over") {
		t.Errorf("progress does not mention starting over:\n%s", out.String())
	}
	if got := f.srv.RangeRequests(); len(got) != 1 {
		t.Errorf("Range requests = %q, want exactly one (the failed resume)", got)
	}
}

// A partial file recorded as belonging to another build is never resumed.
func TestDownloadPartialOfAnotherBuild(t *testing.T) {
	f := newFixture(t, fakehydra.Options{Ranges: true})
	f.writePartial(t, f.data, 1<<20)
	other := fmt.Sprintf("%s  %d\n", sha([]byte("other build")), f.lock.Size)
	if err := os.WriteFile(f.dest+".part.sha256", []byte(other), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.download(t.Context(), fetch.DownloadOptions{}); err != nil {
		t.Fatal(err)
	}
	f.requireVerified(t)
	if got := f.srv.RangeRequests(); len(got) != 0 {
		t.Errorf("resumed a partial of another build: Range %q", got)
	}
}

func TestDownloadPresentAndVerifiedMakesNoRequest(t *testing.T) {
	f := newFixture(t, fakehydra.Options{})
	if err := f.download(t.Context(), fetch.DownloadOptions{}); err != nil {
		t.Fatal(err)
	}
	f.srv.ResetLog()
	if err := f.download(t.Context(), fetch.DownloadOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := f.srv.RequestCount(); n != 0 {
		t.Errorf("second Download made %d requests: %q", n, f.srv.Requests())
	}
	f.requireVerified(t)

	// A dest that does not verify is replaced, never kept.
	bad := append([]byte(nil), f.data...)
	bad[len(bad)/2] ^= 0xff
	if err := os.WriteFile(f.dest, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.download(t.Context(), fetch.DownloadOptions{}); err != nil {
		t.Fatal(err)
	}
	f.requireVerified(t)
	if n := f.srv.RequestCount(); n != 1 {
		t.Errorf("replacing a corrupt dest took %d requests, want 1", n)
	}
}

func TestDownloadCancelKeepsPartialForResume(t *testing.T) {
	const stall = 1 << 20
	f := newFixture(t, fakehydra.Options{StallAt: stall})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out testutil.SyncBuffer
	errc := make(chan error, 1)
	go func() {
		errc <- f.download(ctx, fetch.DownloadOptions{Progress: &out, Terminal: true, Interval: 5 * time.Millisecond})
	}()
	// Wait until progress shows the stalled transfer holding the first MiB.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "1.0 MiB / 3.0 MiB") {
		if time.Now().After(deadline) {
			t.Fatalf("no progress line showing 1.0 MiB; output:\n%q", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	var err error
	select {
	case err = <-errc:
	case <-time.After(10 * time.Second):
		t.Fatal("Download did not return after cancel")
	}
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "run again to resume") {
		t.Fatalf("Download after cancel: %v", err)
	}
	f.requireNoDest(t)
	fi, statErr := os.Stat(f.dest + ".part")
	if statErr != nil || fi.Size() != stall {
		t.Fatalf("partial file after cancel: %v %v, want %d bytes", fi, statErr, stall)
	}
	if s := out.String(); !strings.Contains(s, "\r") || !strings.Contains(s, "%") || !strings.Contains(s, "/s") {
		t.Errorf("terminal progress lacks \\r, percentage or rate: %q", s)
	}

	f.srv.SetOptions(fakehydra.Options{Ranges: true})
	f.srv.ResetLog()
	if err := f.download(t.Context(), fetch.DownloadOptions{}); err != nil {
		t.Fatal(err)
	}
	f.requireVerified(t)
	if got := f.srv.RangeRequests(); len(got) != 1 || got[0] != fmt.Sprintf("bytes=%d-", stall) {
		t.Errorf("Range requests = %q, want one from %d", got, stall)
	}
}

func TestDownloadPlainProgress(t *testing.T) {
	const stall = 2 << 20
	f := newFixture(t, fakehydra.Options{StallAt: stall})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out testutil.SyncBuffer
	errc := make(chan error, 1)
	go func() {
		errc <- f.download(ctx, fetch.DownloadOptions{Progress: &out, Interval: 5 * time.Millisecond})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(out.String(), "2.0 MiB / 3.0 MiB") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no repeated progress lines; output:\n%s", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-errc
	s := out.String()
	if strings.Contains(s, "\r") {
		t.Errorf("plain progress contains \\r: %q", s)
	}
	if !strings.HasPrefix(s, imageName+": downloading 3.0 MiB from http://127.0.0.1:") {
		t.Errorf("first progress line: %q", strings.SplitN(s, "\n", 2)[0])
	}
}

func TestVerify(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	data := []byte("hello")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := fetch.Verify(p, 5, strings.ToUpper(sha(data))); err != nil {
		t.Errorf("Verify of a good file: %v", err)
	}
	var mm *fetch.MismatchError
	if err := fetch.Verify(p, 6, sha(data)); !errors.As(err, &mm) || mm.What != "size" {
		t.Errorf("Verify with a wrong size: %v", err)
	}
	if err := fetch.Verify(p, 5, sha([]byte("hellO"))); !errors.As(err, &mm) || mm.What != "sha256" || mm.Got != sha(data) {
		t.Errorf("Verify with a wrong sha: %v", err)
	}
	if err := fetch.Verify(filepath.Join(dir, "missing"), 5, sha(data)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Verify of a missing file: %v", err)
	}
}

// A partial file whose server does not answer is kept, and the error says
// what to do about it.
func TestDownloadHeadFailsWithPartial(t *testing.T) {
	f := newFixture(t, fakehydra.Options{Ranges: true})
	const n = 1 << 20
	f.writePartial(t, f.data, n)
	f.srv.Close()
	err := f.download(t.Context(), fetch.DownloadOptions{})
	if err == nil {
		t.Fatal("Download from a closed server succeeded")
	}
	for _, w := range []string{imageName, f.dest + ".part", "kept", "run again when the server answers", "delete it to start over"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
	f.requireNoDest(t)
	if fi, statErr := os.Stat(f.dest + ".part"); statErr != nil || fi.Size() != n {
		t.Errorf("partial file after a failed HEAD: %v %v, want %d bytes kept", fi, statErr, n)
	}
}
