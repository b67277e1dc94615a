// Package testguest builds the stand-in guest used by armdev's end-to-end
// test and benchmarks: a small aarch64 Linux disk image laid out like the
// NixOS SD image (MBR; FAT "FIRMWARE" at 8 MiB; ext4 "NIXOS_SD" at 38 MiB
// holding /boot/extlinux/extlinux.conf), which boots through the real u-boot.
//
// The guest is Debian's arm64 kernel, busybox, bash and dropbear. Its first
// boot looks like NixOS's stock SD image: the accounts installation-device.nix
// leaves (root and nixos with empty passwords, the groups NixOS always
// declares, the nixbld users), root login over SSH with a key, and
// /etc/nixos/configuration.nix written by clone-config.nix. Its
// nixos-rebuild (guest/standin/armdev-standin) refuses what NixOS's
// assertions on users and groups refuse, with NixOS's messages, and
// activates accounts, sshd settings and 9p mounts the way NixOS does; it and
// nix-env log every call to /var/log/armdev-standin.log. Its sudo is a small
// setuid-root Go program (see sudo/main.go) that logs the same way and lets
// root and group wheel run commands as root, so `sudo poweroff` and `sudo
// nixos-rebuild switch` work as on NixOS. MmapWriteProgram (see
// mmapwrite/main.go) proves that a 9p mount allows shared writable mmap.
// Packages come from apt (arm64 must be a dpkg architecture) and Build
// compiles the Go programs with the go command; everything is cached, so
// only the first Build is slow.
package testguest

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/rsonpath/armdev/internal/disk"
	"github.com/rsonpath/armdev/internal/fetch"
)

// UBoot is where Debian's u-boot-qemu package puts the u-boot the guest
// boots through (qemu-system-aarch64 -bios UBoot).
const UBoot = fetch.DebianUBootPath

// RootPartitionOffset is the byte offset of the ext4 root partition
// (partition 2, sector 77824), the same as in the NixOS SD image.
const RootPartitionOffset = 39845888

// MmapWriteProgram is the guest's `armdev-mmap-write FILE TEXT`: it writes
// TEXT to FILE through a shared writable mapping and exits 1 naming the
// failing call and errno, e.g. mmap on a 9p mount with cache=none.
const MmapWriteProgram = "/usr/bin/armdev-mmap-write"

// FailMarker, anywhere in the guest's /etc/nixos/configuration.nix (a
// comment will do), makes its nixos-rebuild fail at evaluation, before it
// changes anything.
const FailMarker = "armdev-standin-fail"

// FailAfterActivationMarker, anywhere in configuration.nix, makes its
// nixos-rebuild switch activate everything (root login over SSH is off
// afterwards) and then fail as switch-to-configuration does when a unit
// fails: "warning: the following units failed: …", exit status 4.
const FailAfterActivationMarker = "armdev-standin-fail-after-activation"

// recipeVersion is mixed into the cache key; bump it to force rebuilds.
const recipeVersion = "testguest-recipe-3"

// recipe is what the image is made from; its files are part of the cache
// key. The Go programs in guestPrograms are built for the guest by
// buildGuestProgram.
//
//go:embed build.sh guest sudo/main.go mmapwrite/main.go
var recipe embed.FS

// guestPrograms are the recipe's Go programs: the folder holding each
// main.go, and where build.sh expects the linux/arm64 binary in guest/.
var guestPrograms = []struct{ dir, out string }{
	{"sudo", "standin/sudo"},
	{"mmapwrite", "standin/armdev-mmap-write"},
}

// Options configures Build.
type Options struct {
	// CacheDir holds downloaded packages and built images. Default:
	// $ARMDEV_TESTGUEST_CACHE, else os.UserCacheDir()/armdev-testguest.
	CacheDir string
	// Log receives build progress; nil discards it.
	Log io.Writer
}

// Result describes a built image.
type Result struct {
	// ImageZst is the path of the zstd-compressed raw disk image.
	ImageZst string `json:"image_zst"`
	// Size is the size in bytes of the raw (decompressed) image.
	Size int64 `json:"size"`
	// SHA256 is the hex SHA-256 of the ImageZst file.
	SHA256 string `json:"sha256"`
	// Packages lists the .deb files the image was built from.
	Packages []string `json:"packages"`
}

// Build returns the stand-in guest image, building it first unless an image
// for the same recipe (package versions and this package's scripts) is
// already cached. Concurrent calls sharing a cache directory wait for each
// other.
func Build(ctx context.Context, opts Options) (Result, error) {
	logw := opts.Log
	if logw == nil {
		logw = io.Discard
	}
	cache, err := cacheDir(opts.CacheDir)
	if err != nil {
		return Result{}, fmt.Errorf("build test guest: %w", err)
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return Result{}, fmt.Errorf("build test guest: %w", err)
	}
	unlock, err := lockDir(ctx, filepath.Join(cache, "lock"))
	if err != nil {
		return Result{}, fmt.Errorf("build test guest: %w", err)
	}
	defer unlock()

	debs, err := resolvePackagesCached(ctx, cache)
	if err != nil {
		return Result{}, fmt.Errorf("build test guest: %w", err)
	}
	key, err := recipeKey(debs)
	if err != nil {
		return Result{}, fmt.Errorf("build test guest: %w", err)
	}
	imgDir := filepath.Join(cache, "images", key)
	if res, err := loadResult(imgDir); err == nil {
		fmt.Fprintf(logw, "testguest: cached image %s\n", res.ImageZst)
		return res, nil
	}

	// Under the lock no other build runs: leftovers are from killed ones.
	stale, _ := filepath.Glob(filepath.Join(cache, "build-*"))
	for _, d := range stale {
		os.RemoveAll(d)
	}
	debDir := filepath.Join(cache, "debs")
	paths, err := downloadPackages(ctx, debDir, debs, logw)
	if err != nil {
		return Result{}, fmt.Errorf("build test guest: %w", err)
	}
	res, err := buildImage(ctx, cache, imgDir, paths, logw)
	if err != nil {
		return Result{}, fmt.Errorf("build test guest: %w", err)
	}
	for _, d := range debs {
		res.Packages = append(res.Packages, d.File)
	}
	if err := saveResult(imgDir, res); err != nil {
		return Result{}, fmt.Errorf("build test guest: %w", err)
	}
	// Images of older recipes are of no further use.
	others, _ := filepath.Glob(filepath.Join(cache, "images", "*"))
	for _, d := range others {
		if d != imgDir {
			os.RemoveAll(d)
		}
	}
	fmt.Fprintf(logw, "testguest: built %s (%d bytes raw)\n", res.ImageZst, res.Size)
	return res, nil
}

// cacheDir applies the CacheDir default.
func cacheDir(dir string) (string, error) {
	if dir != "" {
		return dir, nil
	}
	if env := os.Getenv("ARMDEV_TESTGUEST_CACHE"); env != "" {
		return env, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find cache directory (set ARMDEV_TESTGUEST_CACHE): %w", err)
	}
	return filepath.Join(base, "armdev-testguest"), nil
}

// lockDir takes an exclusive flock on path, polling until ctx is done.
func lockDir(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open cache lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock cache %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for cache lock %s: %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// recipeKey hashes everything the image is made from.
func recipeKey(debs []deb) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n", recipeVersion)
	for _, d := range debs {
		fmt.Fprintf(h, "deb %s %s\n", d.File, d.SHA256)
	}
	var names []string
	err := fs.WalkDir(recipe, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			names = append(names, p)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("hash recipe: %w", err)
	}
	sort.Strings(names)
	for _, n := range names {
		b, err := recipe.ReadFile(n)
		if err != nil {
			return "", fmt.Errorf("hash recipe: %w", err)
		}
		fmt.Fprintf(h, "file %s %d\n", n, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:20], nil
}

const resultFile = "result.json"

// loadResult returns the cached result in dir if its image is intact
// (same size as recorded; the hash is checked at build time only).
func loadResult(dir string) (Result, error) {
	b, err := os.ReadFile(filepath.Join(dir, resultFile))
	if err != nil {
		return Result{}, err
	}
	var res Result
	if err := json.Unmarshal(b, &res); err != nil {
		return Result{}, fmt.Errorf("read %s: %w", resultFile, err)
	}
	res.ImageZst = filepath.Join(dir, filepath.Base(res.ImageZst))
	if _, err := os.Stat(res.ImageZst); err != nil {
		return Result{}, err
	}
	return res, nil
}

func saveResult(dir string, res Result) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("save result: %w", err)
	}
	tmp := filepath.Join(dir, resultFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("save result: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, resultFile)); err != nil {
		return fmt.Errorf("save result: %w", err)
	}
	return nil
}

// buildImage runs build.sh in a scratch directory, compresses the raw image
// and moves the result into imgDir.
func buildImage(ctx context.Context, cache, imgDir string, debPaths []string, logw io.Writer) (Result, error) {
	work, err := os.MkdirTemp(cache, "build-")
	if err != nil {
		return Result{}, fmt.Errorf("make scratch directory: %w", err)
	}
	defer os.RemoveAll(work)
	if err := extractRecipe(work); err != nil {
		return Result{}, err
	}
	// build.sh installs guest/standin/sudo setuid root and
	// guest/standin/armdev-mmap-write as MmapWriteProgram.
	for _, p := range guestPrograms {
		if err := buildGuestProgram(ctx, cache, filepath.Join(work, p.dir), filepath.Join(work, "guest", filepath.FromSlash(p.out)), logw); err != nil {
			return Result{}, err
		}
	}
	raw := filepath.Join(work, "testguest.img")
	args := append([]string{filepath.Join(work, "build.sh"), filepath.Join(work, "guest"), filepath.Join(work, "scratch"), raw}, debPaths...)
	if err := run(ctx, logw, "", "sh", args...); err != nil {
		return Result{}, fmt.Errorf("assemble image: %w", err)
	}
	st, err := os.Stat(raw)
	if err != nil {
		return Result{}, fmt.Errorf("assemble image: %w", err)
	}
	zst := raw + ".zst"
	fmt.Fprintf(logw, "testguest: compressing %d bytes\n", st.Size())
	if err := run(ctx, logw, "", "zstd", "-q", "-T0", "-f", "--rm", raw, "-o", zst); err != nil {
		return Result{}, fmt.Errorf("compress image: %w", err)
	}
	sum, err := fileSHA256(zst)
	if err != nil {
		return Result{}, err
	}

	if err := os.RemoveAll(imgDir); err != nil {
		return Result{}, fmt.Errorf("replace cached image: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(imgDir), 0o755); err != nil {
		return Result{}, fmt.Errorf("store image: %w", err)
	}
	staged := filepath.Join(work, "out")
	if err := os.Mkdir(staged, 0o755); err != nil {
		return Result{}, fmt.Errorf("store image: %w", err)
	}
	if err := os.Rename(zst, filepath.Join(staged, filepath.Base(zst))); err != nil {
		return Result{}, fmt.Errorf("store image: %w", err)
	}
	if err := os.Rename(staged, imgDir); err != nil {
		return Result{}, fmt.Errorf("store image: %w", err)
	}
	return Result{ImageZst: filepath.Join(imgDir, filepath.Base(zst)), Size: st.Size(), SHA256: sum}, nil
}

// extractRecipe writes build.sh and guest/ into dir.
func extractRecipe(dir string) error {
	err := fs.WalkDir(recipe, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, filepath.FromSlash(p))
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := recipe.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		return fmt.Errorf("write recipe files: %w", err)
	}
	return nil
}

// buildGuestProgram compiles the guest program whose sources were extracted
// to srcDir (as a throw-away module of its own, so Build needs no source
// tree) into a static linux/arm64 binary at out.
func buildGuestProgram(ctx context.Context, cache, srcDir, out string, logw io.Writer) error {
	name := filepath.Base(srcDir)
	goBin, err := goCommand()
	if err != nil {
		return fmt.Errorf("build the guest's %s: %w", name, err)
	}
	mod := fmt.Sprintf("module armdev-standin/%s\n\ngo 1.22\n", name)
	if err := os.WriteFile(filepath.Join(srcDir, "go.mod"), []byte(mod), 0o644); err != nil {
		return fmt.Errorf("build the guest's %s: %w", name, err)
	}
	env := append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0",
		"GOWORK=off", "GOFLAGS=-mod=mod", "GOTOOLCHAIN=local")
	if os.Getenv("GOCACHE") == "" {
		if _, err := os.UserCacheDir(); err != nil {
			env = append(env, "GOCACHE="+filepath.Join(cache, "gocache"))
		}
	}
	fmt.Fprintf(logw, "testguest: building %s with %s\n", name, goBin)
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-buildvcs=false", "-ldflags=-s", "-o", out, ".")
	cmd.Dir = srcDir
	cmd.Env = env
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build the guest's %s: %w: %s", name, err, strings.TrimSpace(string(b)))
	}
	return nil
}

// goCommand finds the go command: in PATH, else in the GOROOT this program
// was built with (go test puts GOROOT/bin in PATH anyway).
func goCommand() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	//lint:ignore SA1019 only a fallback; meaningful for test binaries and on the machine that built armdev
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	return "", errors.New("the go command was not found: install Go or put it in PATH")
}

// run runs a command in its own process group (killed whole on cancel),
// sending its output to logw. A failure's error ends with the output's tail.
func run(ctx context.Context, logw io.Writer, dir, name string, args ...string) error {
	var tail tailBuffer
	w := io.MultiWriter(logw, &tail)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	// build.sh runs mke2fs, debugfs, mkfs.vfat and sfdisk, which Debian keeps
	// off ordinary users' PATH.
	cmd.Env = append(os.Environ(), "PATH="+os.Getenv("PATH")+string(os.PathListSeparator)+strings.Join(disk.SbinDirs, string(os.PathListSeparator)))
	cmd.Stdout = w
	cmd.Stderr = w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Run(); err != nil {
		if t := strings.TrimSpace(tail.String()); t != "" {
			return fmt.Errorf("%s: %w: %s", name, err, strings.ReplaceAll(t, "\n", " | "))
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// tailBuffer keeps the last tailMax bytes written to it.
type tailBuffer struct{ b []byte }

const tailMax = 600

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > tailMax {
		t.b = t.b[len(t.b)-tailMax:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
