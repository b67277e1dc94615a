package fetch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// sdImageJob is the Hydra job that builds the aarch64 SD image.
const sdImageJob = "nixos.sd_image.aarch64-linux"

// Hydra is a client for the parts of Hydra's HTTP API armdev needs.
type Hydra struct {
	// BaseURL is Hydra's base URL, e.g. config.DefaultHydraURL (required).
	BaseURL string
	// Client is the HTTP client to use; nil means a client with a 60 s
	// timeout.
	Client *http.Client
}

var (
	buildPath = regexp.MustCompile(`/build/([0-9]+)/?$`)
	// productKey is what Hydra numbers build products with. The key goes
	// into the download URL as a path segment, so anything else (such as
	// "../../evil?q=") would let the answer choose another URL.
	productKey = regexp.MustCompile(`^[0-9]{1,9}$`)
)

// Resolve finds the latest build of the SD image job of release (e.g.
// "22.11") and returns a Lock pinning it. It fails with a one-line error when
// the release is unknown, the build has not finished or failed, or it has no
// sd-image product.
func (h Hydra) Resolve(ctx context.Context, release string) (Lock, error) {
	base := strings.TrimRight(h.BaseURL, "/")
	if base == "" {
		return Lock{}, fmt.Errorf("resolve release %s: no Hydra URL given", release)
	}
	id, err := h.latest(ctx, base, release)
	if err != nil {
		return Lock{}, err
	}
	b, err := h.build(ctx, base, id)
	if err != nil {
		return Lock{}, err
	}
	if b.ID != 0 && b.ID != id {
		return Lock{}, fmt.Errorf("hydra build %d: JSON describes build %d", id, b.ID)
	}
	if b.Finished != 1 {
		return Lock{}, fmt.Errorf("hydra build %d (latest of release %s) has not finished yet: try again later", id, release)
	}
	if b.BuildStatus == nil || *b.BuildStatus != 0 {
		status := "unknown"
		if b.BuildStatus != nil {
			status = strconv.Itoa(*b.BuildStatus)
		}
		return Lock{}, fmt.Errorf("hydra build %d (latest of release %s) failed (buildstatus %s): try again later or pick another release", id, release, status)
	}
	if b.System != "" && b.System != "aarch64-linux" {
		return Lock{}, fmt.Errorf("hydra build %d is for system %q, not aarch64-linux", id, b.System)
	}
	n, p, ok := b.sdImage()
	if !ok {
		return Lock{}, fmt.Errorf("hydra build %d (latest of release %s) has no sd-image product", id, release)
	}
	if !productKey.MatchString(n) {
		return Lock{}, fmt.Errorf("hydra build %d: the answer is not what armdev expects from a Hydra (build product key %q is not a number): check ARMDEV_HYDRA_URL", id, n)
	}
	l := Lock{
		Release:    release,
		BuildID:    id,
		URL:        fmt.Sprintf("%s/build/%d/download/%s/%s", base, id, n, url.PathEscape(p.Name)),
		FileName:   p.Name,
		Size:       p.FileSize,
		SHA256:     strings.ToLower(p.SHA256Hash),
		ResolvedAt: time.Now().UTC().Truncate(time.Second),
	}
	if err := l.Validate(); err != nil {
		return Lock{}, fmt.Errorf("hydra build %d: unusable sd-image product: %w", id, err)
	}
	return l, nil
}

func (h Hydra) client() *http.Client {
	if h.Client != nil {
		return h.Client
	}
	return &http.Client{Timeout: 60 * time.Second}
}

// latest returns the id of the latest build of release's SD image job.
func (h Hydra) latest(ctx context.Context, base, release string) (int, error) {
	u := fmt.Sprintf("%s/job/nixos/release-%s/%s/latest", base, url.PathEscape(release), sdImageJob)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, fmt.Errorf("resolve release %s: %w", release, err)
	}
	c := *h.client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Do(req)
	if err != nil {
		return 0, fmt.Errorf("resolve release %s: %w", release, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	switch resp.StatusCode {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
	case http.StatusNotFound:
		return 0, fmt.Errorf("hydra has no SD image job for release %q (404 from %s): check the release name, e.g. 22.11", release, u)
	default:
		return 0, fmt.Errorf("resolve release %s: %s answered %s, expected a redirect to the latest build", release, u, resp.Status)
	}
	loc, err := resp.Location()
	if err != nil {
		return 0, fmt.Errorf("resolve release %s: redirect without a usable Location: %w", release, err)
	}
	m := buildPath.FindStringSubmatch(loc.Path)
	if m == nil {
		return 0, fmt.Errorf("resolve release %s: redirect to %s is not a build URL", release, loc)
	}
	id, err := strconv.Atoi(m[1])
	if err != nil {
		return 0, fmt.Errorf("resolve release %s: bad build id in %s: %w", release, loc, err)
	}
	return id, nil
}

type hydraProduct struct {
	Type       string `json:"type"`
	Subtype    string `json:"subtype"`
	Name       string `json:"name"`
	FileSize   int64  `json:"filesize"`
	SHA256Hash string `json:"sha256hash"`
}

type hydraBuild struct {
	ID            int                     `json:"id"`
	Finished      int                     `json:"finished"`
	BuildStatus   *int                    `json:"buildstatus"`
	System        string                  `json:"system"`
	BuildProducts map[string]hydraProduct `json:"buildproducts"`
}

// sdImage returns the product number and description of the SD image:
// the first product (by number) with subtype "sd-image", else the first
// file whose name ends in ".img.zst".
func (b hydraBuild) sdImage() (string, hydraProduct, bool) {
	keys := make([]string, 0, len(b.BuildProducts))
	for k := range b.BuildProducts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, errA := strconv.Atoi(keys[i])
		c, errC := strconv.Atoi(keys[j])
		if errA == nil && errC == nil {
			return a < c
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		if b.BuildProducts[k].Subtype == "sd-image" {
			return k, b.BuildProducts[k], true
		}
	}
	for _, k := range keys {
		if p := b.BuildProducts[k]; p.Type == "file" && strings.HasSuffix(p.Name, ".img.zst") {
			return k, p, true
		}
	}
	return "", hydraProduct{}, false
}

// build fetches the JSON description of build id.
func (h Hydra) build(ctx context.Context, base string, id int) (hydraBuild, error) {
	u := fmt.Sprintf("%s/build/%d", base, id)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return hydraBuild{}, fmt.Errorf("get hydra build %d: %w", id, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := h.client().Do(req)
	if err != nil {
		return hydraBuild{}, fmt.Errorf("get hydra build %d: %w", id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return hydraBuild{}, fmt.Errorf("get hydra build %d: %s answered %s", id, u, resp.Status)
	}
	var b hydraBuild
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&b); err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return hydraBuild{}, fmt.Errorf("get hydra build %d: %w", id, err)
		}
		return hydraBuild{}, fmt.Errorf("get hydra build %d: %s did not answer JSON: %w", id, u, err)
	}
	return b, nil
}
