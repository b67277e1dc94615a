// Package harness makes throwaway armdev workspaces for the end-to-end test
// and the benchmarks: the stand-in guest served by a fake Hydra on
// loopback, per-run state, share and configuration folders, a free SSH
// port, and the real `just` recipes to drive them.
package harness

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rsonpath/armdev/internal/disk"
	"github.com/rsonpath/armdev/internal/fakehydra"
	"github.com/rsonpath/armdev/internal/guestuser"
	"github.com/rsonpath/armdev/internal/instance"
	"github.com/rsonpath/armdev/internal/testguest"
	"github.com/rsonpath/armdev/internal/testutil"
)

// Release is the NixOS release the fake Hydra serves the stand-in under.
const Release = "26.05"

// DebianUBoot is u-boot for QEMU's virt board from Debian's u-boot-qemu.
const DebianUBoot = testguest.UBoot

// Harness is one workspace under test.
type Harness struct {
	// Root is the armdev checkout whose justfile is driven.
	Root string
	// Dir holds the workspace's folders: state, share, nixos.
	Dir string
	// State, Share and NixOS are the workspace's ARMDEV_STATE_DIR,
	// ARMDEV_SHARE and ARMDEV_NIXOS_CONFIG.
	State, Share, NixOS string
	// Port is the SSH port on 127.0.0.1.
	Port int
	// Hydra serves the stand-in image.
	Hydra *fakehydra.Server
	// Extra environment (NAME=value) added to every call.
	Extra []string
	// Log receives each call's output as it happens; may be nil.
	Log io.Writer

	shared bool // the Hydra belongs to another harness
}

// Prerequisites lists what the end-to-end run needs and is missing, one
// line each with the way to get it; empty when all is there.
func Prerequisites() []string {
	var missing []string
	for _, tool := range []string{"just", "go", "qemu-system-aarch64", "qemu-img", "debugfs", "zstd", "ssh", "tmux"} {
		if _, err := disk.LookTool(tool); err != nil {
			missing = append(missing, fmt.Sprintf("%s not found on PATH (see .ci/run for how to install it)", tool))
		}
	}
	if _, err := os.Stat(DebianUBoot); err != nil {
		missing = append(missing, DebianUBoot+" is missing: apt-get install u-boot-qemu")
	}
	if err := testguest.Prerequisites(); err != nil {
		missing = append(missing, err.Error())
	}
	return missing
}

// New builds (or takes from the cache) the stand-in guest, serves it from a
// fake Hydra and lays out a workspace in dir. Close stops the server.
func New(ctx context.Context, root, dir string, log io.Writer) (*Harness, error) {
	res, err := testguest.Build(ctx, testguest.Options{Log: log})
	if err != nil {
		return nil, fmt.Errorf("build stand-in guest: %w", err)
	}
	data, err := os.ReadFile(res.ImageZst)
	if err != nil {
		return nil, fmt.Errorf("read stand-in guest: %w", err)
	}
	hydra := fakehydra.NewServer()
	hydra.AddBuild(Release, "nixos-image-sd-card-"+Release+".20260601.0123abc-aarch64-linux.img.zst", data)
	h, err := layout(root, dir, hydra, log)
	if err != nil {
		hydra.Close()
		return nil, err
	}
	return h, nil
}

// Sibling lays out a second, independent workspace in dir that uses the
// same fake Hydra, for side-by-side runs. Only the first one's Close stops
// the server.
func (h *Harness) Sibling(dir string) (*Harness, error) {
	s, err := layout(h.Root, dir, h.Hydra, h.Log)
	if err != nil {
		return nil, err
	}
	s.shared = true
	return s, nil
}

// layout makes a workspace's folders and picks its port.
func layout(root, dir string, hydra *fakehydra.Server, log io.Writer) (*Harness, error) {
	h := &Harness{Root: root, Dir: dir, Log: log, Hydra: hydra,
		State: filepath.Join(dir, "state"), Share: filepath.Join(dir, "share dir"), NixOS: filepath.Join(dir, "nixos")}
	for _, d := range []string{h.State, h.Share} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	// The guest user mirrors the host user, except where NixOS cannot (a
	// root host maps to 1000): give that uid the share, as a developer
	// owns theirs.
	if id := h.Identity(); id.UID != os.Getuid() {
		if err := os.Chown(h.Share, id.UID, id.UID); err != nil {
			return nil, fmt.Errorf("share: %w", err)
		}
	}
	if err := os.CopyFS(h.NixOS, os.DirFS(filepath.Join(root, "share", "etc", "nixos"))); err != nil {
		return nil, fmt.Errorf("copy guest configuration: %w", err)
	}
	var err error
	if h.Port, err = testutil.FreePort(); err != nil {
		return nil, err
	}
	return h, nil
}

// Close stops the fake Hydra (unless this is a Sibling).
func (h *Harness) Close() {
	if h.Hydra != nil && !h.shared {
		h.Hydra.Close()
	}
}

// Env is the environment every call gets: the workspace's settings on top
// of this process's environment.
func (h *Harness) Env() []string {
	env := append(os.Environ(),
		"ARMDEV_STATE_DIR="+h.State,
		"ARMDEV_SHARE="+h.Share,
		"ARMDEV_NIXOS_CONFIG="+h.NixOS,
		"ARMDEV_HYDRA_URL="+h.Hydra.URL(),
		"ARMDEV_NIXOS_RELEASE="+Release,
		"ARMDEV_UBOOT="+DebianUBoot,
		"ARMDEV_SSH_PORT="+strconv.Itoa(h.Port),
		"ARMDEV_MEMORY=1G",
		"ARMDEV_DISK_SIZE=2G",
		"ARMDEV_BOOT_TIMEOUT=5m",
		"ARMDEV_SHUTDOWN_TIMEOUT=60s",
	)
	return append(env, h.Extra...)
}

// Result is what one call did.
type Result struct {
	// Stdout and Stderr are the call's output.
	Stdout, Stderr string
	// Code is the exit status.
	Code int
	// Took is the wall time.
	Took time.Duration
}

// String summarises a result for failure messages.
func (r Result) String() string {
	return fmt.Sprintf("exit %d after %s\nstdout:\n%s\nstderr:\n%s", r.Code, r.Took.Round(time.Millisecond), r.Stdout, r.Stderr)
}

// Just runs `just RECIPE ARGS…` in the armdev checkout with stdin.
func (h *Harness) Just(ctx context.Context, stdin io.Reader, args ...string) Result {
	return h.Command(ctx, stdin, "just", args...)
}

// Command runs a program in the armdev checkout with the workspace's
// environment.
func (h *Harness) Command(ctx context.Context, stdin io.Reader, name string, args ...string) Result {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = h.Root
	cmd.Env = h.Env()
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if h.Log != nil {
		fmt.Fprintf(h.Log, "$ %s %s\n", name, strings.Join(args, " "))
		cmd.Stdout, cmd.Stderr = io.MultiWriter(&stdout, h.Log), io.MultiWriter(&stderr, h.Log)
	}
	start := time.Now()
	err := cmd.Run()
	r := Result{Stdout: stdout.String(), Stderr: stderr.String(), Took: time.Since(start)}
	if err != nil {
		r.Code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			r.Code = ee.ExitCode()
		} else {
			r.Stderr += "\n" + err.Error()
		}
	}
	return r
}

// Layout names the workspace's state files.
func (h *Harness) Layout() instance.Layout { return instance.Layout{Dir: h.State} }

// Identity is how the guest declares this host user (ARMDEV_USER from
// Extra, else the default).
func (h *Harness) Identity() guestuser.Identity {
	user := guestuser.DefaultUser
	for _, kv := range h.Extra {
		if v, ok := strings.CutPrefix(kv, "ARMDEV_USER="); ok {
			user = v
		}
	}
	return guestuser.For(os.Getuid(), os.Getgid(), user)
}

// PIDFile is where the workspace's QEMU writes its pid.
func (h *Harness) PIDFile() string { return h.Layout().PIDFile() }

// PID reads the pid file; 0 when there is none.
func (h *Harness) PID() int {
	data, err := os.ReadFile(h.PIDFile())
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}
