package qemuvm

import (
	"bufio"
	"context"
	"errors"
	"net"
	"path/filepath"
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
	ctx := context.Background()
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
	if _, err := DialQMP(context.Background(), filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Fatal("no error")
	}
}
