package qemuvm

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestChooseAccel(t *testing.T) {
	linuxKVM := Host{GOOS: "linux", GOARCH: "arm64", KVMUsable: true}
	linuxNoKVM := Host{GOOS: "linux", GOARCH: "arm64"}
	x86 := Host{GOOS: "linux", GOARCH: "amd64", KVMUsable: true} // KVM can't run arm64 guests here
	mac := Host{GOOS: "darwin", GOARCH: "arm64"}
	macIntel := Host{GOOS: "darwin", GOARCH: "amd64"}
	impdef := Caps{PauthImpdef: true}
	tests := []struct {
		name       string
		host       Host
		spec       Spec
		caps       Caps
		accel, cpu string
	}{
		{"linux arm64 kvm", linuxKVM, Spec{}, impdef, "kvm", "host"},
		{"linux arm64 no kvm", linuxNoKVM, Spec{}, impdef, "tcg,thread=multi", "max,pauth-impdef=on"},
		{"x86 impdef", x86, Spec{}, impdef, "tcg,thread=multi", "max,pauth-impdef=on"},
		{"x86 old qemu", x86, Spec{}, Caps{}, "tcg,thread=multi", "max"},
		{"mac arm64", mac, Spec{}, Caps{}, "hvf", "host"},
		{"mac intel", macIntel, Spec{}, impdef, "tcg,thread=multi", "max,pauth-impdef=on"},
		{"accel override tcg", linuxKVM, Spec{Accel: "tcg"}, impdef, "tcg", "max,pauth-impdef=on"},
		{"accel override kvm", x86, Spec{Accel: "kvm"}, impdef, "kvm", "host"},
		{"cpu override", x86, Spec{CPU: "cortex-a72"}, impdef, "tcg,thread=multi", "cortex-a72"},
		{"both override", mac, Spec{Accel: "tcg,thread=single", CPU: "max"}, impdef, "tcg,thread=single", "max"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			accel, cpu := ChooseAccel(tc.host, tc.spec, tc.caps)
			if accel != tc.accel || cpu != tc.cpu {
				t.Errorf("got %q %q, want %q %q", accel, cpu, tc.accel, tc.cpu)
			}
		})
	}
}

func TestDetectHost(t *testing.T) {
	h := DetectHost()
	if h.GOOS == "" || h.GOARCH == "" {
		t.Fatalf("DetectHost = %+v", h)
	}
	_, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if want := err == nil && h.GOOS == "linux"; h.KVMUsable != want {
		t.Errorf("KVMUsable = %v, /dev/kvm open error %v", h.KVMUsable, err)
	}
}

func needQEMU(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("qemu-system-aarch64")
	if err != nil {
		t.Skip("qemu-system-aarch64 not installed")
	}
	return p
}

func TestProbeCapsReal(t *testing.T) {
	qemu := needQEMU(t)
	start := time.Now()
	caps, err := ProbeCaps(t.Context(), qemu)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("caps %+v in %v", caps, time.Since(start))
	if !caps.PauthImpdef {
		t.Error("PauthImpdef = false for a QEMU >= 6.0")
	}
	out, err := exec.Command(qemu, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if caps.Version == "" || !strings.Contains(string(out), "version "+caps.Version) {
		t.Errorf("Version %q not in %q", caps.Version, out)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("probe took %v, want < 1s", d)
	}
}

// fakeQEMU writes a script that acts like an old QEMU without pauth-impdef, or one
// that fails for another reason.
func fakeQEMU(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "qemu-system-aarch64")
	script := "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'QEMU emulator version 5.2.0 (fake)'; exit 0; fi\n" + body
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProbeCapsFake(t *testing.T) {
	old := fakeQEMU(t, `case "$*" in *pauth-impdef*) echo "qemu-system-aarch64: can't apply global max-arm-cpu.pauth-impdef=on: Property 'max-arm-cpu.pauth-impdef' not found" >&2; exit 1;; esac
cat >/dev/null; exit 0
`)
	caps, err := ProbeCaps(t.Context(), old)
	if err != nil {
		t.Fatal(err)
	}
	if caps.PauthImpdef || caps.Version != "5.2.0" {
		t.Errorf("caps = %+v, want no impdef, version 5.2.0", caps)
	}

	broken := fakeQEMU(t, `echo "qemu-system-aarch64: No machine specified" >&2; exit 1
`)
	if _, err := ProbeCaps(t.Context(), broken); err == nil || !strings.Contains(err.Error(), "No machine specified") {
		t.Errorf("broken QEMU: err = %v", err)
	}
	if _, err := ProbeCaps(t.Context(), filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing QEMU: no error")
	}
}
