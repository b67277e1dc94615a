package qemutest_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rsonpath/armdev/internal/guestssh/sshtest"
	"github.com/rsonpath/armdev/internal/qemuvm"
	"github.com/rsonpath/armdev/internal/qemuvm/qemutest"
)

// waitExit waits for process pid to exit, failing the test after 10 s.
func waitExit(t *testing.T, pid int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := qemuvm.WaitExit(ctx, pid); err != nil {
		t.Fatal(err)
	}
}

// staysUp checks that process pid is still running a while after something
// that should not stop it.
func staysUp(t *testing.T, pid int, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if qemuvm.WaitExit(ctx, pid) == nil {
		t.Fatalf("QEMU exited after %s", what)
	}
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func TestStartInspectKill(t *testing.T) {
	f := qemutest.New(t, qemutest.Behaviour{})
	spec := f.Spec(t)
	p := qemutest.Start(t, spec)

	st, err := qemuvm.Inspect(spec.PIDFile, spec.Disk, spec.Name)
	if err != nil || !st.Running || st.PID != p.PID || st.ByScan {
		t.Fatalf("Inspect = %+v, %v; want running as pid %d through the pid file", st, err, p.PID)
	}
	if comm, _ := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/comm"); strings.TrimSpace(string(comm)) != qemuvm.DefaultName {
		t.Errorf("process name %q, want %q", comm, qemuvm.DefaultName)
	}
	if holder, held, err := qemuvm.PIDFileHolder(spec.PIDFile); err != nil || !held || holder != p.PID {
		t.Errorf("pid file lock: holder %d, held %v, %v", holder, held, err)
	}
	if log, _ := os.ReadFile(spec.SerialLog); !bytes.Contains(log, []byte("U-Boot")) {
		t.Errorf("serial log %q lacks u-boot's banner", log)
	}

	// Without its pid file the guest is found by its name and disk.
	if err := os.Remove(spec.PIDFile); err != nil {
		t.Fatal(err)
	}
	if st, err := qemuvm.Inspect(spec.PIDFile, spec.Disk, spec.Name); err != nil || !st.Running || !st.ByScan || st.PID != p.PID {
		t.Fatalf("Inspect without the pid file = %+v, %v", st, err)
	}
	res, err := qemuvm.Kill(t.Context(), spec.PIDFile, spec.Disk, spec.Name)
	if err != nil || !res.Killed || res.PID != p.PID {
		t.Fatalf("Kill = %+v, %v", res, err)
	}
	if st, err := qemuvm.Inspect(spec.PIDFile, spec.Disk, spec.Name); err != nil || st.Running {
		t.Errorf("after Kill: %+v, %v", st, err)
	}
}

func TestKilledQEMUsFilesDoNotBlockTheNext(t *testing.T) {
	f := qemutest.New(t, qemutest.Behaviour{})
	spec := f.Spec(t)
	p := qemutest.Start(t, spec)
	res, err := qemuvm.Kill(t.Context(), spec.PIDFile, spec.Disk, spec.Name)
	if err != nil || !res.Killed || res.ByScan || res.PID != p.PID {
		t.Fatalf("Kill = %+v, %v", res, err)
	}
	// A SIGKILLed QEMU removes nothing: its QMP socket stays (and its pid
	// file, when Kill finds its lock still held for a moment after the
	// process is gone). The next start replaces them.
	if !exists(spec.QMPSocket) {
		t.Error("a killed QEMU removed its QMP socket")
	}
	waitUnheld(t, spec.PIDFile)
	next := qemutest.Start(t, spec)
	if st, err := qemuvm.Inspect(spec.PIDFile, spec.Disk, spec.Name); err != nil || !st.Running || st.PID != next.PID {
		t.Errorf("after a restart: %+v, %v", st, err)
	}
}

// waitUnheld waits until no process holds pidFile's lock, failing the test
// after 10 s.
func waitUnheld(t *testing.T, pidFile string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		holder, held, err := qemuvm.PIDFileHolder(pidFile)
		if err != nil {
			t.Fatal(err)
		}
		if !held {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d still holds %s", holder, pidFile)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestQMPRoundTrip(t *testing.T) {
	f := qemutest.New(t, qemutest.Behaviour{PowerdownDelay: 50 * time.Millisecond})
	spec := f.Spec(t)
	p := qemutest.Start(t, spec)
	ctx := t.Context()
	q, err := qemuvm.DialQMP(ctx, spec.QMPSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.Version != "7.2.0" {
		t.Errorf("version %q", q.Version)
	}
	if st, err := q.Status(ctx); err != nil || !st.Running || st.Status != "running" {
		t.Errorf("Status = %+v, %v", st, err)
	}
	var qerr *qemuvm.QMPError
	if _, err := q.Execute(ctx, "no-such-command", nil); !errors.As(err, &qerr) || qerr.Class != "CommandNotFound" {
		t.Errorf("an unknown command: %v", err)
	}
	// The POWERDOWN event that follows the answer is skipped, and the guest
	// powers off: QEMU exits and removes its pid file and sockets.
	if err := q.Powerdown(ctx); err != nil {
		t.Fatal(err)
	}
	waitExit(t, p.PID)
	for _, path := range []string{spec.PIDFile, spec.QMPSocket, spec.SerialSocket} {
		if exists(path) {
			t.Errorf("%s is left after a clean exit", path)
		}
	}
}

func TestPowerButtonIgnoredQuitRefused(t *testing.T) {
	f := qemutest.New(t, qemutest.Behaviour{IgnorePowerButton: true, RefuseQuit: true})
	spec := f.Spec(t)
	p := qemutest.Start(t, spec)
	ctx := t.Context()
	m, err := qemuvm.DialMonitor(ctx, spec.QMPSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Powerdown(ctx); err != nil {
		t.Fatal(err)
	}
	staysUp(t, p.PID, "an ignored power button")
	var qerr *qemuvm.QMPError
	if err := m.Quit(ctx); !errors.As(err, &qerr) || !strings.Contains(qerr.Desc, "quit refused") {
		t.Fatalf("a refused quit: %v", err)
	}
	// The behaviour applies from the next command on, to a running QEMU too.
	f.Set(t, qemutest.Behaviour{})
	if err := m.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	waitExit(t, p.PID)
}

func TestProbeCaps(t *testing.T) {
	f := qemutest.New(t, qemutest.Behaviour{})
	caps, err := qemuvm.ProbeCaps(t.Context(), f.Path)
	if err != nil || caps.Version != "7.2.0" || !caps.PauthImpdef {
		t.Errorf("ProbeCaps = %+v, %v", caps, err)
	}
}

// dialSSH logs in over the forwarded port as user with key.
func dialSSH(port int, user string, key ssh.Signer, hostKey ssh.PublicKey) (*ssh.Client, error) {
	return ssh.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port), &ssh.ClientConfig{
		User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(key)},
		HostKeyCallback: ssh.FixedHostKey(hostKey), Timeout: 5 * time.Second,
	})
}

func TestSSHForward(t *testing.T) {
	key := sshtest.NewSigner(t)
	srv := sshtest.NewServer(t, sshtest.Options{Authorized: map[string][]ssh.PublicKey{"armdev": {key.PublicKey()}}})
	f := qemutest.New(t, qemutest.Behaviour{SSH: srv.Addr()})
	spec := f.Spec(t)
	p := qemutest.Start(t, spec)

	c, err := dialSSH(spec.SSHPort, "armdev", key, srv.HostKey())
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Output("echo through the forward")
	if err != nil || string(out) != "through the forward\n" {
		t.Errorf("command over the forward: %q, %v", out, err)
	}
	c.Close()

	// The guest's sshd goes away: connections are accepted and closed.
	f.Set(t, qemutest.Behaviour{})
	if _, err := dialSSH(spec.SSHPort, "armdev", key, srv.HostKey()); err == nil {
		t.Error("logged in with no sshd behind the forward")
	}

	// A guest whose network is not up: connections stay silent.
	f.Set(t, qemutest.Behaviour{HoldSSH: true})
	conn, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(spec.SSHPort))
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := conn.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a held connection answered: %d, %v", n, err)
	}
	conn.Close()

	// A guest that dies as SSH reaches it.
	f.Set(t, qemutest.Behaviour{HaltAtSSH: true})
	if conn, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(spec.SSHPort)); err == nil {
		conn.Close()
	}
	waitExit(t, p.PID)
}

func TestConsoleEchoesAndLogs(t *testing.T) {
	f := qemutest.New(t, qemutest.Behaviour{Serial: []string{"login: "}})
	spec := f.Spec(t)
	qemutest.Start(t, spec)
	conn, err := net.Dial("unix", spec.SerialSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("root\r")); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 5)
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != "root\r" {
		t.Errorf("echo %q, %v", got, err)
	}
	if log, _ := os.ReadFile(spec.SerialLog); string(log) != "login: \r\nroot\r" {
		t.Errorf("serial log %q", log)
	}
}

func TestHalt(t *testing.T) {
	f := qemutest.New(t, qemutest.Behaviour{})
	spec := f.Spec(t)
	p := qemutest.Start(t, spec)
	if n := f.Halt(); n != 1 {
		t.Fatalf("Halt reached %d guests, want 1", n)
	}
	waitExit(t, p.PID)
	if exists(spec.PIDFile) {
		t.Error("a guest that powered off left its pid file")
	}
	if n := f.Halt(); n != 0 {
		t.Errorf("Halt reached %d guests after they stopped", n)
	}
}

func TestStartFailuresAreQEMUs(t *testing.T) {
	f := qemutest.New(t, qemutest.Behaviour{})
	running := f.Spec(t)
	qemutest.Start(t, running)

	t.Run("disk in use", func(t *testing.T) {
		spec := f.Spec(t)
		spec.Disk, spec.Name = running.Disk, "other-guest"
		_, err := qemuvm.Start(t.Context(), spec, "tcg", "max", qemutest.LogFile(spec))
		if err == nil || !strings.Contains(err.Error(), "is in use by another QEMU") {
			t.Errorf("a second QEMU on the disk: %v", err)
		}
	})
	t.Run("missing disk", func(t *testing.T) {
		spec := f.Spec(t)
		spec.Disk += ".missing"
		_, err := qemuvm.Start(t.Context(), spec, "tcg", "max", qemutest.LogFile(spec))
		if err == nil || !strings.Contains(err.Error(), "QEMU exited: -drive") || !strings.Contains(err.Error(), "No such file or directory") {
			t.Errorf("a missing disk: %v", err)
		}
	})
	t.Run("fail at start", func(t *testing.T) {
		g := qemutest.New(t, qemutest.Behaviour{FailStart: "-machine virt: unsupported machine"})
		spec := g.Spec(t)
		_, err := qemuvm.Start(t.Context(), spec, "tcg", "max", qemutest.LogFile(spec))
		if err == nil || err.Error() != "QEMU exited: -machine virt: unsupported machine" {
			t.Errorf("FailStart: %v", err)
		}
	})
	// qemuvm.Start refuses these before it runs QEMU; QEMU's own messages
	// are what it reads when it loses a race.
	for name, tc := range map[string]struct {
		change func(*qemuvm.Spec)
		want   string
	}{
		"port taken": {func(s *qemuvm.Spec) { s.SSHPort = running.SSHPort },
			"Could not set up host forwarding rule 'tcp:127.0.0.1:" + strconv.Itoa(running.SSHPort) + "-:22'"},
		"pid file held": {func(s *qemuvm.Spec) { s.PIDFile = running.PIDFile },
			"cannot create PID file: Cannot lock pid file: Resource temporarily unavailable"},
	} {
		t.Run(name, func(t *testing.T) {
			spec := f.Spec(t)
			tc.change(&spec)
			out, err := exec.Command(spec.QEMU, qemuvm.Args(spec, "tcg", "max")...).CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "qemu-system-aarch64: ") || !strings.Contains(string(out), tc.want) {
				t.Errorf("exit %v, output %q; want status 1 and %q", err, out, tc.want)
			}
		})
	}
	if st, err := qemuvm.Inspect(running.PIDFile, running.Disk, running.Name); err != nil || !st.Running {
		t.Errorf("the first guest did not survive the others' failures: %+v, %v", st, err)
	}
}

func TestQemuImgSeesTheDiskLocks(t *testing.T) {
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("qemu-img not available")
	}
	f := qemutest.New(t, qemutest.Behaviour{})
	spec := f.Spec(t)
	if out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", spec.Disk, "16M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v %s", err, out)
	}
	qemutest.Start(t, spec)
	out, err := exec.Command(qemuImg, "snapshot", "-c", "s", spec.Disk).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `Failed to get "write" lock`) {
		t.Errorf("qemu-img snapshot of a running guest's disk: %v %s", err, out)
	}
	if out, err := exec.Command(qemuImg, "info", "-U", spec.Disk).CombinedOutput(); err != nil {
		t.Errorf("qemu-img info -U of a running guest's disk: %v %s", err, out)
	}
	if _, err := qemuvm.Kill(t.Context(), spec.PIDFile, spec.Disk, spec.Name); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(qemuImg, "snapshot", "-c", "s", spec.Disk).CombinedOutput(); err != nil {
		t.Errorf("qemu-img snapshot once the guest is gone: %v %s", err, out)
	}
}
