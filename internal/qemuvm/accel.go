package qemuvm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"time"
)

// Host is what accelerator choice depends on.
type Host struct {
	GOOS, GOARCH string
	KVMUsable    bool // /dev/kvm opens read-write
}

// DetectHost describes the machine this process runs on.
func DetectHost() Host {
	h := Host{GOOS: runtime.GOOS, GOARCH: runtime.GOARCH}
	if h.GOOS == "linux" {
		if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
			f.Close()
			h.KVMUsable = true
		}
	}
	return h
}

// Caps are the features of one QEMU binary that armdev uses.
type Caps struct {
	PauthImpdef bool   // accepts -cpu max,pauth-impdef=on (much faster TCG)
	Version     string // e.g. "7.2.22"
}

var versionRE = regexp.MustCompile(`version (\d+\.\d+(?:\.\d+)?)`)

// ProbeCaps asks the QEMU binary qemu what it supports: it reads --version, then
// starts a stopped virt machine with -cpu max,pauth-impdef=on and an in-band QMP
// monitor that quits at once. It takes a few tens of milliseconds and caches nothing.
func ProbeCaps(ctx context.Context, qemu string) (Caps, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()

	out, err := exec.CommandContext(ctx, qemu, "--version").Output()
	if err != nil {
		return Caps{}, fmt.Errorf("probe QEMU: %s --version: %w", qemu, err)
	}
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return Caps{}, fmt.Errorf("probe QEMU: no version in %q", firstLine(string(out)))
	}
	caps := Caps{Version: string(m[1])}

	cmd := exec.CommandContext(ctx, qemu,
		"-no-user-config", "-nodefaults", "-display", "none", "-S",
		"-machine", "virt", "-accel", "tcg", "-cpu", "max,pauth-impdef=on",
		"-qmp", "stdio")
	cmd.Stdin = strings.NewReader(`{"execute":"qmp_capabilities"}` + "\n" + `{"execute":"quit"}` + "\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	switch {
	case err == nil:
		caps.PauthImpdef = true
	case strings.Contains(stderr.String(), "pauth-impdef"):
		// "Property 'max-arm-cpu.pauth-impdef' not found": an older QEMU.
	case ctx.Err() != nil:
		return Caps{}, fmt.Errorf("probe QEMU: %w", ctx.Err())
	default:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return Caps{}, fmt.Errorf("probe QEMU: %s failed: %s", qemu, lastLine(stderr.String()))
		}
		return Caps{}, fmt.Errorf("probe QEMU: %w", err)
	}
	return caps, nil
}

// ChooseAccel picks the accelerator and CPU model: KVM with the host CPU on Linux
// arm64 when /dev/kvm is usable, HVF with the host CPU on macOS arm64, and otherwise
// multi-threaded TCG emulating "max" (with pauth-impdef=on when caps allow it, which
// makes pointer authentication cheap to emulate). spec.Accel and spec.CPU override
// the choice; with only spec.Accel set, the CPU model follows that accelerator.
func ChooseAccel(host Host, spec Spec, caps Caps) (accel, cpu string) {
	accel = spec.Accel
	if accel == "" {
		switch {
		case host.GOOS == "linux" && host.GOARCH == "arm64" && host.KVMUsable:
			accel = "kvm"
		case host.GOOS == "darwin" && host.GOARCH == "arm64":
			accel = "hvf"
		default:
			accel = "tcg,thread=multi"
		}
	}
	cpu = spec.CPU
	if cpu == "" {
		switch kind, _, _ := strings.Cut(accel, ","); kind {
		case "kvm", "hvf":
			cpu = "host"
		default:
			cpu = "max"
			if caps.PauthImpdef {
				cpu = "max,pauth-impdef=on"
			}
		}
	}
	return accel, cpu
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

func lastLine(s string) string {
	var last string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if t := strings.TrimSpace(sc.Text()); t != "" {
			last = t
		}
	}
	return last
}
