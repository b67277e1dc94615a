package fakehydra_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rsonpath/armdev/internal/fakehydra"
)

func setup(t *testing.T, opts fakehydra.Options) (*fakehydra.Server, []byte, string) {
	t.Helper()
	srv := fakehydra.NewServer()
	t.Cleanup(srv.Close)
	srv.SetOptions(opts)
	data := make([]byte, 256<<10)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	id := srv.AddBuild("22.11", "nixos-sd-image-x-aarch64-linux.img.zst", data)
	return srv, data, srv.URL() + srv.DownloadPath(id)
}

func do(t *testing.T, method, url string, header map[string]string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func TestRoutes(t *testing.T) {
	srv, data, _ := setup(t, fakehydra.Options{})
	resp, _, _ := do(t, "GET", srv.URL()+"/job/nixos/release-22.11/nixos.sd_image.aarch64-linux/latest", nil)
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("latest: %s", resp.Status)
	}
	loc := resp.Header.Get("Location")
	resp, body, err := do(t, "GET", loc, map[string]string{"Accept": "application/json"})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("build JSON: %v %v", resp.Status, err)
	}
	var b struct {
		ID            int    `json:"id"`
		Finished      int    `json:"finished"`
		BuildStatus   int    `json:"buildstatus"`
		System        string `json:"system"`
		BuildProducts map[string]struct {
			Type, Subtype, Name string
			FileSize            int64  `json:"filesize"`
			SHA256Hash          string `json:"sha256hash"`
		} `json:"buildproducts"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	p := b.BuildProducts["1"]
	if loc != fmt.Sprintf("%s/build/%d", srv.URL(), b.ID) || b.Finished != 1 || b.BuildStatus != 0 || b.System != "aarch64-linux" ||
		p.Type != "file" || p.Subtype != "sd-image" || p.FileSize != int64(len(data)) || p.SHA256Hash != hex.EncodeToString(sum[:]) {
		t.Errorf("build JSON = %s", body)
	}
	resp, _, _ = do(t, "GET", srv.URL()+"/job/nixos/release-19.03/nixos.sd_image.aarch64-linux/latest", nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown release: %s", resp.Status)
	}
	want := []string{
		"GET /job/nixos/release-22.11/nixos.sd_image.aarch64-linux/latest",
		fmt.Sprintf("GET /build/%d", b.ID),
		"GET /job/nixos/release-19.03/nixos.sd_image.aarch64-linux/latest",
	}
	if got := srv.Requests(); !slices.Equal(got, want) || srv.RequestCount() != 3 {
		t.Errorf("Requests = %q, want %q", got, want)
	}
}

func TestDefaultIgnoresRange(t *testing.T) {
	_, data, url := setup(t, fakehydra.Options{})
	resp, _, _ := do(t, "HEAD", url, nil)
	if resp.Header.Get("Accept-Ranges") != "" || resp.ContentLength != int64(len(data)) {
		t.Errorf("HEAD: Accept-Ranges %q, length %d", resp.Header.Get("Accept-Ranges"), resp.ContentLength)
	}
	resp, body, err := do(t, "GET", url, map[string]string{"Range": "bytes=100-"})
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, data) {
		t.Errorf("ranged GET: %s, %d bytes, %v", resp.Status, len(body), err)
	}
}

func TestRanges(t *testing.T) {
	_, data, url := setup(t, fakehydra.Options{Ranges: true})
	resp, body, err := do(t, "GET", url, map[string]string{"Range": "bytes=100-"})
	if err != nil || resp.StatusCode != 206 || !bytes.Equal(body, data[100:]) || resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Errorf("ranged GET: %s, %d bytes, %v", resp.Status, len(body), err)
	}
}

func TestIgnoreRange200(t *testing.T) {
	_, data, url := setup(t, fakehydra.Options{IgnoreRange200: true, Chunked: true})
	resp, _, _ := do(t, "HEAD", url, nil)
	if resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Errorf("HEAD does not advertise ranges")
	}
	resp, body, err := do(t, "GET", url, map[string]string{"Range": "bytes=100-"})
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, data) || resp.ContentLength != -1 {
		t.Errorf("ranged GET: %s, %d bytes, length %d, %v", resp.Status, len(body), resp.ContentLength, err)
	}
}

func TestTruncateAt(t *testing.T) {
	_, data, url := setup(t, fakehydra.Options{TruncateAt: 1000})
	_, body, err := do(t, "GET", url, nil)
	if !errors.Is(err, io.ErrUnexpectedEOF) || !bytes.Equal(body, data[:1000]) {
		t.Errorf("truncated GET: %d bytes, %v", len(body), err)
	}
}

func TestWrongSHA(t *testing.T) {
	_, data, url := setup(t, fakehydra.Options{WrongSHA: true})
	build, _, _ := strings.Cut(url, "/download/")
	_, body, _ := do(t, "GET", build, map[string]string{"Accept": "application/json"})
	sum := sha256.Sum256(data)
	if bytes.Contains(body, []byte(hex.EncodeToString(sum[:]))) || !bytes.Contains(body, []byte(`"sha256hash"`)) {
		t.Errorf("JSON advertises the right sum: %s", body)
	}
}

func TestStallReleasedByClose(t *testing.T) {
	srv, data, url := setup(t, fakehydra.Options{StallAt: 4096})
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := make([]byte, 4096)
	if _, err := io.ReadFull(resp.Body, got); err != nil || !bytes.Equal(got, data[:4096]) {
		t.Fatalf("first bytes: %v", err)
	}
	closed := make(chan struct{})
	go func() { srv.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hangs on a stalled download")
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("stalled body ended cleanly")
	}
}
