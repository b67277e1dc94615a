package instance

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rsonpath/armdev/internal/qemuvm"
	"github.com/rsonpath/armdev/internal/qemuvm/qemutest"
)

// fakeVM is the handle on a guest run by the fake QEMU f, not started yet.
func fakeVM(t *testing.T, f *qemutest.Fake) (VM, qemuvm.Spec) {
	t.Helper()
	spec := f.Spec(t)
	spec.Name = GuestName
	return VM{PIDFile: spec.PIDFile, Disk: spec.Disk, Name: GuestName, QMPSocket: spec.QMPSocket, SerialSocket: spec.SerialSocket}, spec
}

// staleSoon reports whether no process holds pidFile (if there is one)
// within a few seconds.
func staleSoon(t *testing.T, pidFile string) bool {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, held, err := qemuvm.PIDFileHolder(pidFile)
		if err != nil {
			t.Fatal(err)
		}
		if !held || time.Now().After(deadline) {
			return !held
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestVMFromRunRecord(t *testing.T) {
	l := Layout{Dir: "/s"}
	if v := l.VM(RunRecord{}); v.QMPSocket != l.QMPSocket() || v.SerialSocket != l.SerialSocket() || v.PIDFile != l.PIDFile() || v.Disk != l.Disk() || v.Name != GuestName {
		t.Errorf("VM without a record: %+v", v)
	}
	// Deep state folders keep their sockets elsewhere; the record says where.
	if v := l.VM(RunRecord{QMP: "/run/a/qmp.sock", Serial: "/run/a/serial.sock"}); v.QMPSocket != "/run/a/qmp.sock" || v.SerialSocket != "/run/a/serial.sock" {
		t.Errorf("VM from a record: %+v", v)
	}
}

func TestVMStatusKill(t *testing.T) {
	v, spec := fakeVM(t, qemutest.New(t, qemutest.Behaviour{}))
	if st, err := v.Status(); err != nil || st.Running {
		t.Fatalf("Status before start = %+v, %v", st, err)
	}
	p := qemutest.Start(t, spec)
	st, err := v.Status()
	if err != nil || !st.Running || st.PID != p.PID {
		t.Fatalf("Status = %+v, %v; want running as pid %d", st, err, p.PID)
	}
	res, err := v.Kill(t.Context())
	if err != nil || !res.Killed || res.PID != p.PID {
		t.Fatalf("Kill = %+v, %v", res, err)
	}
	if st, err := v.Status(); err != nil || st.Running {
		t.Errorf("Status after Kill = %+v, %v", st, err)
	}
	if res, err := v.Kill(t.Context()); err != nil || res.Killed {
		t.Errorf("Kill of a stopped guest = %+v, %v", res, err)
	}
}

func TestVMStatusNamesTheOperation(t *testing.T) {
	// A pid file that cannot be read: Status says what it was doing, once.
	v := VM{PIDFile: t.TempDir(), Disk: filepath.Join(t.TempDir(), "disk.qcow2"), Name: GuestName}
	_, err := v.Status()
	if err == nil || !strings.HasPrefix(err.Error(), "check the guest: ") || strings.Count(err.Error(), "check the guest") != 1 {
		t.Errorf("Status with an unreadable pid file: %v", err)
	}
}

func TestVMPowerOff(t *testing.T) {
	const wait = 200 * time.Millisecond
	button := "pressing the power button (QMP system_powerdown)"
	quit := "asking QEMU to quit (QMP quit)"
	notWithin := "the guest did not power off within 200ms"
	kill := "killing QEMU"
	refused := "QEMU did not quit (QMP quit: quit refused (qemutest.Behaviour.RefuseQuit) (GenericError))"
	noDial := errors.New("no monitor here")
	for _, tc := range []struct {
		name  string
		b     qemutest.Behaviour
		vm    func(*VM)
		steps []string
	}{
		{name: "power button obeyed", b: qemutest.Behaviour{PowerdownDelay: 20 * time.Millisecond},
			steps: []string{button}},
		{name: "power button ignored, quit obeyed", b: qemutest.Behaviour{IgnorePowerButton: true},
			steps: []string{button, notWithin, quit}},
		{name: "power button ignored, quit refused", b: qemutest.Behaviour{IgnorePowerButton: true, RefuseQuit: true},
			steps: []string{button, notWithin, quit, refused, kill}},
		{name: "monitor cannot be dialled", vm: func(v *VM) {
			v.DialMonitor = func(context.Context, string) (qemuvm.Monitor, error) { return nil, noDial }
		}, steps: []string{"pressing the power button (QMP system_powerdown)", "the power button did not work (no monitor here)",
			quit, "QEMU did not quit (no monitor here)", kill}},
		{name: "monitor socket gone", vm: func(v *VM) { v.QMPSocket += ".gone" },
			steps: []string{button, "the power button did not work (connect to QMP: ", quit, "QEMU did not quit (connect to QMP: ", kill}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, spec := fakeVM(t, qemutest.New(t, tc.b))
			if tc.vm != nil {
				tc.vm(&v)
			}
			p := qemutest.Start(t, spec)
			var said []string
			if err := v.PowerOff(t.Context(), p.PID, wait, func(s string) { said = append(said, s) }); err != nil {
				t.Fatalf("PowerOff: %v (said %q)", err, said)
			}
			if len(said) != len(tc.steps) {
				t.Fatalf("PowerOff said %q, want %q", said, tc.steps)
			}
			for i, want := range tc.steps {
				if !strings.HasPrefix(said[i], want) {
					t.Errorf("step %d: %q, want %q", i+1, said[i], want)
				}
			}
			if st, err := v.Status(); err != nil || st.Running {
				t.Errorf("after PowerOff: %+v, %v", st, err)
			}
			// A clean exit removes the pid file. A SIGKILLed QEMU's lock on it
			// can outlive it by a moment (a thread being created as the signal
			// lands holds its descriptors), and then Kill keeps the file: it
			// must be stale, held by no one, once that moment has passed.
			_, err := os.Stat(spec.PIDFile)
			switch {
			case tc.steps[len(tc.steps)-1] != kill && !errors.Is(err, os.ErrNotExist):
				t.Errorf("pid file after a clean exit: %v", err)
			case tc.steps[len(tc.steps)-1] == kill && !staleSoon(t, spec.PIDFile):
				t.Errorf("the pid file of the killed QEMU is still held")
			}
		})
	}
}
