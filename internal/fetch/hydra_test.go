package fetch_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rsonpath/armdev/internal/fakehydra"
	"github.com/rsonpath/armdev/internal/fetch"
)

const imageName = "nixos-sd-image-22.11.4773.ea4c80b39be-aarch64-linux.img.zst"

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func newServer(t *testing.T) *fakehydra.Server {
	t.Helper()
	srv := fakehydra.NewServer()
	t.Cleanup(srv.Close)
	return srv
}

func TestResolveFollowsLatestToBuildJSON(t *testing.T) {
	srv := newServer(t)
	data := randomBytes(t, 64<<10)
	id := srv.AddBuild("22.11", imageName, data)
	before := time.Now().Add(-time.Second)

	lock, err := fetch.Hydra{BaseURL: srv.URL() + "/"}.Resolve(t.Context(), "22.11")
	if err != nil {
		t.Fatal(err)
	}
	if lock.BuildID != id || lock.Release != "22.11" || lock.FileName != imageName {
		t.Errorf("lock = %+v, want build %d of 22.11 named %s", lock, id, imageName)
	}
	if want := srv.URL() + srv.DownloadPath(id); lock.URL != want {
		t.Errorf("URL = %q, want %q", lock.URL, want)
	}
	if lock.Size != int64(len(data)) || lock.SHA256 != sha(data) {
		t.Errorf("size/sha = %d/%s, want %d/%s", lock.Size, lock.SHA256, len(data), sha(data))
	}
	if lock.ResolvedAt.Before(before) || lock.ResolvedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("ResolvedAt = %v, not now", lock.ResolvedAt)
	}
	want := []string{
		"GET /job/nixos/release-22.11/nixos.sd_image.aarch64-linux/latest",
		"GET /build/" + strconv.Itoa(id),
	}
	if got := srv.Requests(); !slices.Equal(got, want) {
		t.Errorf("requests = %q, want %q", got, want)
	}
}

func TestResolveLatestMoves(t *testing.T) {
	srv := newServer(t)
	h := fetch.Hydra{BaseURL: srv.URL(), Client: srv.Client()}
	first := randomBytes(t, 1000)
	id1 := srv.AddBuild("22.11", imageName, first)
	l1, err := h.Resolve(t.Context(), "22.11")
	if err != nil {
		t.Fatal(err)
	}
	second := randomBytes(t, 2000)
	id2 := srv.AddBuild("22.11", strings.Replace(imageName, "4773", "4774", 1), second)
	l2, err := h.Resolve(t.Context(), "22.11")
	if err != nil {
		t.Fatal(err)
	}
	if l1.BuildID != id1 || l2.BuildID != id2 || id1 == id2 {
		t.Fatalf("build ids %d then %d, want %d then %d (different)", l1.BuildID, l2.BuildID, id1, id2)
	}
	if l1.SHA256 != sha(first) || l2.SHA256 != sha(second) || l1.URL == l2.URL {
		t.Errorf("locks do not pin their own builds: %+v %+v", l1, l2)
	}
}

func TestResolveErrors(t *testing.T) {
	srv := newServer(t)
	h := fetch.Hydra{BaseURL: srv.URL(), Client: srv.Client()}
	data := randomBytes(t, 100)
	unfinished := srv.Add(fakehydra.Build{Release: "23.05", Name: imageName, Data: data, Unfinished: true})
	failed := srv.Add(fakehydra.Build{Release: "23.11", Name: imageName, Data: data, BuildStatus: 1})
	noImage := srv.Add(fakehydra.Build{Release: "24.05", Name: "nixos.iso", Data: data, Subtype: "iso"})
	for _, tc := range []struct {
		release string
		want    []string
	}{
		{"21.05", []string{"no SD image job", `"21.05"`, "404"}},
		{"23.05", []string{"build " + strconv.Itoa(unfinished), "not finished"}},
		{"23.11", []string{"build " + strconv.Itoa(failed), "failed", "buildstatus 1"}},
		{"24.05", []string{"build " + strconv.Itoa(noImage), "no sd-image product"}},
	} {
		_, err := h.Resolve(t.Context(), tc.release)
		if err == nil {
			t.Errorf("Resolve(%s) succeeded", tc.release)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Resolve(%s) error %q does not contain %q", tc.release, err, w)
			}
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("Resolve(%s) error is not one line: %q", tc.release, err)
		}
	}
}

func TestLockRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state", "image.lock.json")
	if _, err := fetch.ReadLock(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadLock of a missing file: %v, want os.ErrNotExist", err)
	}
	l := fetch.Lock{
		Release: "22.11", BuildID: 42, URL: "http://example.invalid/build/42/download/1/x.img.zst",
		FileName: "x.img.zst", Size: 1234, SHA256: sha([]byte("x")),
		ResolvedAt: time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC),
	}
	if err := fetch.WriteLock(path, l); err != nil {
		t.Fatal(err)
	}
	got, err := fetch.ReadLock(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != l {
		t.Errorf("ReadLock = %+v, want %+v", got, l)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "\n  \"build_id\": 42,\n") {
		t.Errorf("lock file is not indented JSON:\n%s", raw)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("lock dir holds %d entries, want only the lock file", len(entries))
	}
	l.SHA256 = "nothex"
	if err := fetch.WriteLock(path, l); err == nil {
		t.Error("WriteLock accepted a bad sha256")
	}
	if err := os.WriteFile(path, []byte(`{"url": ""}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := fetch.ReadLock(path); err == nil || !strings.Contains(err.Error(), "delete it") {
		t.Errorf("ReadLock of an invalid lock: %v", err)
	}
}

// tamperJSON rewrites the build JSON the fake Hydra sends, as a Hydra (or
// something posing as one) with an unexpected answer would send it.
type tamperJSON struct {
	next      http.RoundTripper
	old, repl string
}

func (tj tamperJSON) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := tj.next.RoundTrip(req)
	if err != nil || !strings.Contains(resp.Header.Get("Content-Type"), "json") {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	body = bytes.ReplaceAll(body, []byte(tj.old), []byte(tj.repl))
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Del("Content-Length")
	return resp, nil
}

// A build product key goes into the download URL: only Hydra's numbers may.
func TestResolveRejectsAProductKeyThatIsNotANumber(t *testing.T) {
	srv := newServer(t)
	id := srv.AddBuild("22.11", imageName, randomBytes(t, 100))
	for _, key := range []string{"../../../../evil?q=", "1/../2", "-1", "1e3", ""} {
		client := *srv.Client() // a copy: the server's own client stays as it is
		client.Transport = tamperJSON{next: client.Transport, old: `"1":{`, repl: strconv.Quote(key) + ":{"}
		lock, err := fetch.Hydra{BaseURL: srv.URL(), Client: &client}.Resolve(t.Context(), "22.11")
		if err == nil {
			t.Errorf("product key %q accepted: download URL %s", key, lock.URL)
			continue
		}
		for _, w := range []string{"build " + strconv.Itoa(id), "not what armdev expects", strconv.Quote(key)} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("product key %q: error %q does not contain %q", key, err, w)
			}
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("product key %q: error is not one line: %q", key, err)
		}
	}
}

func TestResolveNeedsABaseURL(t *testing.T) {
	_, err := fetch.Hydra{}.Resolve(t.Context(), "22.11")
	if err == nil || !strings.Contains(err.Error(), "no Hydra URL") {
		t.Fatalf("Resolve without a base URL: %v", err)
	}
}

// The hint to delete a bad lock file is given once.
func TestReadLockHintOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hydra-lock.json")
	for _, content := range []string{"{not json", `{"url": ""}`} {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := fetch.ReadLock(path)
		if err == nil || strings.Count(err.Error(), "delete") != 1 || !strings.Contains(err.Error(), path) {
			t.Errorf("ReadLock of %q: %v, want one hint to delete %s", content, err, path)
		}
	}
}
