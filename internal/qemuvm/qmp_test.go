package qemuvm

import (
	"bufio"
	"context"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeQMP serves one QMP connection: the greeting, then answers from reply for each
// command line it reads, recording the commands.
func fakeQMP(t *testing.T, reply func(cmd string) []string) (string, <-chan string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	cmds := make(chan string, 16)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte(`{"QMP": {"version": {"qemu": {"micro": 1, "minor": 2, "major": 9}}, "capabilities": []}}` + "\n"))
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			cmds <- sc.Text()
			for _, l := range reply(sc.Text()) {
				c.Write([]byte(l + "\n"))
			}
		}
	}()
	return sock, cmds
}

func TestQMPFake(t *testing.T) {
	sock, cmds := fakeQMP(t, func(cmd string) []string {
		switch {
		case strings.Contains(cmd, "query-status"):
			return []string{`{"event": "RESUME", "timestamp": {}}`, `{"return": {"status": "paused", "running": false}}`}
		case strings.Contains(cmd, "system_powerdown"):
			return []string{`{"error": {"class": "GenericError", "desc": "nope"}}`}
		case strings.Contains(cmd, "hang"):
			return nil
		}
		return []string{`{"return": {}}`}
	})
	ctx := t.Context()
	q, err := DialQMP(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.Version != "9.2.1" {
		t.Errorf("Version %q", q.Version)
	}
	if c := <-cmds; c != `{"execute":"qmp_capabilities"}` {
		t.Errorf("first command %s", c)
	}
	st, err := q.Status(ctx)
	if err != nil || st.Running || st.Status != "paused" {
		t.Errorf("Status = %+v, %v", st, err)
	}
	var qe *QMPError
	if err := q.Powerdown(ctx); !errors.As(err, &qe) || qe.Desc != "nope" {
		t.Errorf("Powerdown = %v", err)
	}
	if _, err := q.Execute(ctx, "with-args", map[string]any{"id": "x"}); err != nil {
		t.Fatal(err)
	}
	<-cmds
	<-cmds
	if c := <-cmds; c != `{"arguments":{"id":"x"},"execute":"with-args"}` {
		t.Errorf("command with arguments sent as %s", c)
	}
	tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := q.Execute(tctx, "hang", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hanging command: %v", err)
	}
}

func TestDialQMPNoServer(t *testing.T) {
	if _, err := DialQMP(t.Context(), filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Fatal("no error")
	}
}

// testMonitor is a Monitor that answers from its fields and records the calls, as
// callers' tests fake the monitor (go-qemu's habit).
type testMonitor struct {
	status VMStatus
	calls  []string
}

var _ Monitor = &testMonitor{}

func (m *testMonitor) Status(context.Context) (VMStatus, error) {
	m.calls = append(m.calls, "query-status")
	return m.status, nil
}

func (m *testMonitor) Powerdown(context.Context) error {
	m.calls = append(m.calls, "system_powerdown")
	return nil
}

func (m *testMonitor) Quit(context.Context) error {
	m.calls = append(m.calls, "quit")
	m.status = VMStatus{Status: "shutdown"}
	return nil
}

func (m *testMonitor) Close() error {
	m.calls = append(m.calls, "close")
	return nil
}

// useMonitor is what a caller does with a dialer: status, power button, quit.
func useMonitor(ctx context.Context, dial MonitorDialer, socket string) (VMStatus, error) {
	m, err := dial(ctx, socket)
	if err != nil {
		return VMStatus{}, err
	}
	defer m.Close()
	st, err := m.Status(ctx)
	if err != nil {
		return st, err
	}
	if err := m.Powerdown(ctx); err != nil {
		return st, err
	}
	return st, m.Quit(ctx)
}

// DialMonitor and a fake are interchangeable behind MonitorDialer, and the real one
// sends the QMP commands the Monitor methods name.
func TestMonitorDialer(t *testing.T) {
	sock, cmds := fakeQMP(t, func(cmd string) []string {
		if strings.Contains(cmd, "query-status") {
			return []string{`{"return": {"status": "running", "running": true}}`}
		}
		return []string{`{"return": {}}`}
	})
	st, err := useMonitor(t.Context(), DialMonitor, sock)
	if err != nil || st != (VMStatus{Running: true, Status: "running"}) {
		t.Fatalf("through DialMonitor: %+v, %v", st, err)
	}
	var sent []string
	for range 4 {
		sent = append(sent, <-cmds)
	}
	want := []string{`{"execute":"qmp_capabilities"}`, `{"execute":"query-status"}`, `{"execute":"system_powerdown"}`, `{"execute":"quit"}`}
	if !slices.Equal(sent, want) {
		t.Errorf("sent %q, want %q", sent, want)
	}

	fake := &testMonitor{status: VMStatus{Status: "paused"}}
	dial := func(context.Context, string) (Monitor, error) { return fake, nil }
	if st, err := useMonitor(t.Context(), dial, "unused"); err != nil || st.Status != "paused" {
		t.Fatalf("through the fake: %+v, %v", st, err)
	}
	if want := []string{"query-status", "system_powerdown", "quit", "close"}; !slices.Equal(fake.calls, want) {
		t.Errorf("fake calls %q, want %q", fake.calls, want)
	}
}

// A failed dial gives a nil Monitor, not a Monitor holding a nil *QMP.
func TestDialMonitorFails(t *testing.T) {
	m, err := DialMonitor(t.Context(), filepath.Join(t.TempDir(), "none.sock"))
	if err == nil || m != nil {
		t.Fatalf("DialMonitor = %#v, %v; want nil and an error", m, err)
	}
}
