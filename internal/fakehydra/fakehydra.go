// Package fakehydra is a loopback fake of the few Hydra (hydra.nixos.org)
// routes armdev uses: the "latest" redirect of the NixOS aarch64 SD image job,
// the build's JSON description and the build product download.
//
// It exists for tests and end-to-end runs. Its options reproduce the server
// behaviours a downloader must survive: no Range support (Hydra's own default),
// Range support, a server that advertises ranges but answers 200 to ranged
// requests, bodies cut short, bodies that stall, chunked bodies without a
// length and a JSON that advertises a wrong checksum.
package fakehydra

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// JobName is the Hydra job name of the NixOS aarch64 SD image.
const JobName = "nixos.sd_image.aarch64-linux"

// LastModified returns the Last-Modified time the fake sends with every
// download: an old date, like a real build's, so tests can tell it from the
// local time.
func LastModified() time.Time { return time.Date(2023, 1, 2, 3, 4, 5, 0, time.UTC) }

// Options choose how the server answers download requests. The zero value
// behaves like Hydra itself: no Accept-Ranges header, ranged GETs get the
// whole body with status 200, and a Content-Length.
type Options struct {
	// Ranges serves downloads through http.ServeContent: Accept-Ranges: bytes
	// and 206 answers to Range requests.
	Ranges bool
	// IgnoreRange200 advertises Accept-Ranges: bytes (in HEAD and GET) but
	// answers ranged GETs with 200 and the whole body: the trap that makes
	// grab append a whole file to a partial one.
	IgnoreRange200 bool
	// Chunked drops the Content-Length header from download answers, so the
	// body is sent chunked and its length is unknown to the client.
	Chunked bool
	// TruncateAt, when positive, cuts every download body after this many
	// bytes and drops the connection.
	TruncateAt int64
	// StallAt, when positive, sends this many bytes of every download body and
	// then sends nothing more until the client goes away or the server closes.
	StallAt int64
	// WrongSHA makes the build JSON advertise a checksum that does not match
	// the bytes served.
	WrongSHA bool
}

// Build describes one build to add with Add.
type Build struct {
	// Release is the NixOS release, e.g. "22.11" (job set "release-22.11").
	Release string
	// Name is the product's file name, e.g. "nixos-sd-image-….img.zst".
	Name string
	// Data is the product's content.
	Data []byte
	// Unfinished reports the build as not finished (finished: 0).
	Unfinished bool
	// BuildStatus is Hydra's buildstatus (0 = success).
	BuildStatus int
	// Subtype is the product's subtype; empty means "sd-image".
	Subtype string
}

// Request is one request the server received.
type Request struct {
	// Method is the HTTP method, e.g. "GET" or "HEAD".
	Method string
	// Path is the URL path.
	Path string
	// Range is the Range header, if any.
	Range string
}

// String formats the request as "METHOD /path".
func (r Request) String() string { return r.Method + " " + r.Path }

type build struct {
	Build
	id  int
	sum string
}

// Server is a running fake Hydra on a loopback port. It is safe for
// concurrent use.
type Server struct {
	ts   *httptest.Server
	done chan struct{}
	once sync.Once

	mu     sync.Mutex
	opts   Options
	nextID int
	builds map[int]*build
	latest map[string]int
	log    []Request
}

// NewServer starts a fake Hydra with default (Hydra-like) options on
// 127.0.0.1 and a free port. Call Close when done.
func NewServer() *Server {
	s := &Server{
		done:   make(chan struct{}),
		nextID: 1000,
		builds: map[int]*build{},
		latest: map[string]int{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /job/nixos/{jobset}/{job}/latest", s.handleLatest)
	mux.HandleFunc("GET /build/{id}", s.handleBuild)
	mux.HandleFunc("GET /build/{id}/download/{n}/{name}", s.handleDownload)
	s.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.log = append(s.log, Request{Method: r.Method, Path: r.URL.Path, Range: r.Header.Get("Range")})
		s.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	return s
}

// URL returns the server's base URL, e.g. "http://127.0.0.1:41234".
func (s *Server) URL() string { return s.ts.URL }

// Client returns an http.Client for the server.
func (s *Server) Client() *http.Client { return s.ts.Client() }

// Close releases stalled downloads and shuts the server down.
func (s *Server) Close() {
	s.once.Do(func() {
		close(s.done)
		s.ts.CloseClientConnections()
		s.ts.Close()
	})
}

// SetOptions replaces the download options; they apply to requests that
// arrive afterwards.
func (s *Server) SetOptions(o Options) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts = o
}

// Options returns the current download options.
func (s *Server) Options() Options {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opts
}

// AddBuild adds a finished, successful build of release whose sd-image
// product is name with content data, makes it the latest of that release and
// returns its build id.
func (s *Server) AddBuild(release, name string, data []byte) int {
	return s.Add(Build{Release: release, Name: name, Data: data})
}

// Add adds b, makes it the latest build of b.Release and returns its id.
func (s *Server) Add(b Build) int {
	sum := sha256.Sum256(b.Data)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	id := s.nextID
	s.builds[id] = &build{Build: b, id: id, sum: hex.EncodeToString(sum[:])}
	s.latest[b.Release] = id
	return id
}

// DownloadPath returns the URL path of build id's product, or "" if there is
// no such build.
func (s *Server) DownloadPath(id int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.builds[id]
	if !ok {
		return ""
	}
	return fmt.Sprintf("/build/%d/download/1/%s", id, b.Name)
}

// Log returns every request received so far, oldest first.
func (s *Server) Log() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.log...)
}

// Requests returns every request received so far as "METHOD /path".
func (s *Server) Requests() []string {
	var out []string
	for _, r := range s.Log() {
		out = append(out, r.String())
	}
	return out
}

// RequestCount returns how many requests the server has received.
func (s *Server) RequestCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.log)
}

// RangeRequests returns the Range headers of all requests that had one.
func (s *Server) RangeRequests() []string {
	var out []string
	for _, r := range s.Log() {
		if r.Range != "" {
			out = append(out, r.Range)
		}
	}
	return out
}

// ResetLog forgets the requests received so far.
func (s *Server) ResetLog() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = nil
}

func (s *Server) handleLatest(w http.ResponseWriter, r *http.Request) {
	release, ok := strings.CutPrefix(r.PathValue("jobset"), "release-")
	if !ok || r.PathValue("job") != JobName {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	id, ok := s.latest[release]
	s.mu.Unlock()
	if !ok {
		http.Error(w, "no such job", http.StatusNotFound)
		return
	}
	// Hydra answers with an absolute URL.
	http.Redirect(w, r, fmt.Sprintf("%s/build/%d", s.ts.URL, id), http.StatusFound)
}

func (s *Server) lookup(r *http.Request) (*build, Options, bool) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		return nil, Options{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.builds[id]
	return b, s.opts, ok
}

type product struct {
	Type        string `json:"type"`
	Subtype     string `json:"subtype"`
	Name        string `json:"name"`
	FileSize    int64  `json:"filesize"`
	SHA256Hash  string `json:"sha256hash"`
	Path        string `json:"path"`
	DefaultPath string `json:"defaultpath"`
}

type buildJSON struct {
	ID            int                `json:"id"`
	Finished      int                `json:"finished"`
	BuildStatus   *int               `json:"buildstatus"`
	NixName       string             `json:"nixname"`
	System        string             `json:"system"`
	Project       string             `json:"project"`
	Jobset        string             `json:"jobset"`
	Job           string             `json:"job"`
	Timestamp     int64              `json:"timestamp"`
	BuildProducts map[string]product `json:"buildproducts"`
}

func (s *Server) handleBuild(w http.ResponseWriter, r *http.Request) {
	b, opts, ok := s.lookup(r)
	if !ok {
		http.Error(w, "no such build", http.StatusNotFound)
		return
	}
	if !strings.Contains(r.Header.Get("Accept"), "application/json") {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<html><body><h1>Build %d</h1></body></html>\n", b.id)
		return
	}
	nixname := strings.TrimSuffix(strings.TrimSuffix(b.Name, ".zst"), ".img")
	sum := b.sum
	if opts.WrongSHA {
		bad := sha256.Sum256(append([]byte("wrong"), b.Data...))
		sum = hex.EncodeToString(bad[:])
	}
	subtype := b.Subtype
	if subtype == "" {
		subtype = "sd-image"
	}
	j := buildJSON{
		ID:        b.id,
		NixName:   nixname,
		System:    "aarch64-linux",
		Project:   "nixos",
		Jobset:    "release-" + b.Release,
		Job:       JobName,
		Timestamp: LastModified().Unix(),
		BuildProducts: map[string]product{"1": {
			Type:        "file",
			Subtype:     subtype,
			Name:        b.Name,
			FileSize:    int64(len(b.Data)),
			SHA256Hash:  sum,
			Path:        fmt.Sprintf("/nix/store/%032d-%s/sd-image/%s", b.id, nixname, b.Name),
			DefaultPath: "",
		}},
	}
	if !b.Unfinished {
		j.Finished = 1
		status := b.BuildStatus
		j.BuildStatus = &status
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(j); err != nil {
		panic(http.ErrAbortHandler)
	}
}

func (s *Server) handleDownload(w http.ResponseWriter, r *http.Request) {
	b, opts, ok := s.lookup(r)
	if !ok || b.Unfinished || r.PathValue("n") != "1" || r.PathValue("name") != b.Name {
		http.Error(w, "no such build product", http.StatusNotFound)
		return
	}
	sw := &shapingWriter{ResponseWriter: w, opts: opts, done: s.done, req: r}
	w.Header().Set("Content-Type", "application/zstd")
	switch {
	case opts.IgnoreRange200:
		r.Header.Del("Range")
		r.Header.Del("If-Range")
		http.ServeContent(sw, r, b.Name, LastModified(), bytes.NewReader(b.Data))
	case opts.Ranges:
		http.ServeContent(sw, r, b.Name, LastModified(), bytes.NewReader(b.Data))
	default:
		// Hydra streams the file: no Accept-Ranges, Range ignored.
		w.Header().Set("Content-Length", strconv.Itoa(len(b.Data)))
		w.Header().Set("Last-Modified", LastModified().Format(http.TimeFormat))
		sw.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = sw.Write(b.Data)
		}
	}
}

// shapingWriter applies Chunked, TruncateAt and StallAt to a download body.
type shapingWriter struct {
	http.ResponseWriter
	opts    Options
	done    <-chan struct{}
	req     *http.Request
	written int64
}

func (w *shapingWriter) WriteHeader(code int) {
	if w.opts.Chunked {
		w.Header().Del("Content-Length")
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *shapingWriter) Write(p []byte) (int, error) {
	limit := int64(-1)
	if w.opts.TruncateAt > 0 {
		limit = w.opts.TruncateAt
	}
	if w.opts.StallAt > 0 && (limit < 0 || w.opts.StallAt < limit) {
		limit = w.opts.StallAt
	}
	if limit < 0 || w.written+int64(len(p)) <= limit {
		n, err := w.ResponseWriter.Write(p)
		w.written += int64(n)
		return n, err
	}
	n, err := w.ResponseWriter.Write(p[:limit-w.written])
	w.written += int64(n)
	if err != nil {
		return n, err
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	if w.opts.StallAt > 0 && limit == w.opts.StallAt {
		select {
		case <-w.req.Context().Done():
		case <-w.done:
		}
	}
	// Drop the connection without finishing the body.
	panic(http.ErrAbortHandler)
}
