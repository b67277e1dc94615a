package testguest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// kernelMeta is the Debian metapackage whose dependency names the kernel.
// Its dependency is the generic arm64 flavour: "-cloud-" lacks 9p.
const kernelMeta = "linux-image-arm64:arm64"

// basePackages are the guest's packages besides the kernel. bash is the
// users' login shell, as on NixOS (libtinfo6 is its one library besides
// libc); busybox does the rest.
var basePackages = []string{
	"busybox-static:arm64",
	"bash:arm64",
	"libtinfo6:arm64",
	"dropbear-bin:arm64",
	"libc6:arm64",
	"libcrypt1:arm64",
	"libtomcrypt1:arm64",
	"libtommath1:arm64",
	"libgmp10:arm64",
	"zlib1g:arm64",
}

// deb is one package as apt-get download --print-uris describes it.
type deb struct {
	URL    string
	File   string // the file name apt-get download writes
	Size   int64
	SHA256 string
}

var kernelDep = regexp.MustCompile(`Depends:\s*(linux-image-[0-9][^\s:]*-arm64)(:arm64)?\s*$`)

// aptLists is where apt keeps the package lists apt-get update fetches.
const aptLists = "/var/lib/apt/lists"

// resolvePackagesCached is resolvePackages with its answer cached in dir
// for as long as apt's package lists are unchanged: without apt's own
// pkgcache.bin (Debian containers turn it off) each apt call takes seconds.
func resolvePackagesCached(ctx context.Context, dir string) ([]deb, error) {
	key, err := aptListsKey()
	if err != nil {
		return resolvePackages(ctx)
	}
	path := filepath.Join(dir, "resolved-"+key+".json")
	if b, err := os.ReadFile(path); err == nil {
		var debs []deb
		if json.Unmarshal(b, &debs) == nil && len(debs) == 1+len(basePackages) {
			return debs, nil
		}
	}
	debs, err := resolvePackages(ctx)
	if err != nil {
		return nil, err
	}
	if b, err := json.Marshal(debs); err == nil {
		old, _ := filepath.Glob(filepath.Join(dir, "resolved-*.json"))
		for _, o := range old {
			os.Remove(o)
		}
		tmp := path + ".tmp"
		if os.WriteFile(tmp, b, 0o644) == nil {
			os.Rename(tmp, path)
		}
	}
	return debs, nil
}

// aptListsKey hashes the names, sizes and times of apt's package lists and
// the package names asked for.
func aptListsKey() (string, error) {
	entries, err := os.ReadDir(aptLists)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s %s\n", kernelMeta, strings.Join(basePackages, " "))
	n := 0
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		n++
		fmt.Fprintf(h, "%s %d %d\n", e.Name(), info.Size(), info.ModTime().UnixNano())
	}
	if n == 0 {
		return "", fmt.Errorf("no package lists in %s", aptLists)
	}
	return hex.EncodeToString(h.Sum(nil))[:20], nil
}

// resolvePackages asks apt which package files make up the guest.
func resolvePackages(ctx context.Context) ([]deb, error) {
	out, err := output(ctx, "apt-cache", "depends", kernelMeta)
	if err != nil {
		return nil, fmt.Errorf("resolve kernel package (is arm64 enabled? run: dpkg --add-architecture arm64 && apt-get update): %w", err)
	}
	var kernel string
	for _, line := range strings.Split(out, "\n") {
		if m := kernelDep.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			kernel = m[1] + ":arm64"
			break
		}
	}
	if kernel == "" {
		return nil, fmt.Errorf("resolve kernel package: %s has no linux-image-*-arm64 dependency", kernelMeta)
	}
	pkgs := append([]string{kernel}, basePackages...)
	out, err = output(ctx, "apt-get", append([]string{"download", "--print-uris"}, pkgs...)...)
	if err != nil {
		return nil, fmt.Errorf("resolve packages (run: apt-get update): %w", err)
	}
	debs, err := parsePrintURIs(out)
	if err != nil {
		return nil, fmt.Errorf("resolve packages: %w", err)
	}
	sort.Slice(debs, func(i, j int) bool { return debs[i].File < debs[j].File })
	if len(debs) != len(pkgs) {
		return nil, fmt.Errorf("resolve packages: apt-get listed %d files for %d packages", len(debs), len(pkgs))
	}
	return debs, nil
}

// parsePrintURIs reads lines like
//
//	'http://…/busybox-static_…_arm64.deb' busybox-static_1%3a…_arm64.deb 822236 SHA256:732c…
func parsePrintURIs(out string) ([]deb, error) {
	var debs []deb
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || !strings.HasPrefix(f[0], "'") {
			continue
		}
		size, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad size in %q", sc.Text())
		}
		sum, ok := strings.CutPrefix(f[3], "SHA256:")
		if !ok {
			return nil, fmt.Errorf("no SHA256 in %q", sc.Text())
		}
		if strings.ContainsAny(f[1], "/\x00") || !strings.HasSuffix(f[1], ".deb") {
			return nil, fmt.Errorf("bad file name in %q", sc.Text())
		}
		debs = append(debs, deb{URL: strings.Trim(f[0], "'"), File: f[1], Size: size, SHA256: sum})
	}
	return debs, nil
}

// downloadPackages makes sure every deb is in dir with the right hash,
// fetching the missing ones with apt-get download, and returns their paths.
func downloadPackages(ctx context.Context, dir string, debs []deb, logw io.Writer) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("make package cache: %w", err)
	}
	// apt-get download takes package names; name=version pins exactly the
	// file listed, so the hashes checked below stay meaningful.
	var names []string
	for _, d := range debs {
		if verifyDeb(dir, d) != nil {
			os.Remove(filepath.Join(dir, d.File))
			names = append(names, pkgSpec(d.File))
		}
	}
	if len(names) > 0 {
		fmt.Fprintf(logw, "testguest: downloading %s\n", strings.Join(names, " "))
		args := []string{"download"}
		if os.Geteuid() == 0 {
			// Root downloads into a directory _apt may not enter.
			args = append(args, "-o", "APT::Sandbox::User=root")
		}
		if err := run(ctx, logw, dir, "apt-get", append(args, names...)...); err != nil {
			return nil, fmt.Errorf("download packages: %w", err)
		}
	}
	var paths []string
	for _, d := range debs {
		if err := verifyDeb(dir, d); err != nil {
			return nil, fmt.Errorf("download packages: %w", err)
		}
		paths = append(paths, filepath.Join(dir, d.File))
	}
	return paths, nil
}

// pkgSpec turns "busybox-static_1%3a1.35.0-4_arm64.deb" into
// "busybox-static:arm64=1:1.35.0-4".
func pkgSpec(file string) string {
	parts := strings.Split(strings.TrimSuffix(file, ".deb"), "_")
	if len(parts) != 3 {
		return file
	}
	version := strings.ReplaceAll(parts[1], "%3a", ":")
	return parts[0] + ":" + parts[2] + "=" + version
}

func verifyDeb(dir string, d deb) error {
	p := filepath.Join(dir, d.File)
	st, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("package %s missing: %w", d.File, err)
	}
	if st.Size() != d.Size {
		return fmt.Errorf("package %s has %d bytes, want %d", d.File, st.Size(), d.Size)
	}
	sum, err := fileSHA256(p)
	if err != nil {
		return err
	}
	if sum != d.SHA256 {
		return fmt.Errorf("package %s has SHA-256 %s, want %s", d.File, sum, d.SHA256)
	}
	return nil
}

// output runs a command and returns its stdout; stderr goes into the error.
func output(ctx context.Context, name string, args ...string) (string, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}
