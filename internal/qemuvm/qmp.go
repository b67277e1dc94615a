package qemuvm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Monitor is what armdev asks of QEMU's monitor; *QMP implements it, tests fake it.
type Monitor interface {
	Status(ctx context.Context) (VMStatus, error)
	Powerdown(ctx context.Context) error // the power button (system_powerdown)
	Quit(ctx context.Context) error
	Close() error
}

var _ Monitor = (*QMP)(nil)

// MonitorDialer connects to QEMU's monitor on a unix socket. Callers keep one as a
// value (DialMonitor by default) so that tests can swap in a fake.
type MonitorDialer func(ctx context.Context, socket string) (Monitor, error)

var _ MonitorDialer = DialMonitor

// DialMonitor connects to QMP on a unix socket (DialQMP), as a Monitor.
func DialMonitor(ctx context.Context, socket string) (Monitor, error) {
	q, err := DialQMP(ctx, socket)
	if err != nil {
		// A nil *QMP in a Monitor would not compare equal to nil.
		return nil, err
	}
	return q, nil
}

// QMP is a connection to QEMU's machine protocol on a unix socket. Commands run one
// at a time; asynchronous events are skipped.
type QMP struct {
	mu   sync.Mutex
	conn net.Conn
	r    *bufio.Reader
	// Version is the QEMU version from the greeting, e.g. "7.2.22".
	Version string
}

// QMPError is an error answer from QEMU.
type QMPError struct {
	Command string
	Class   string
	Desc    string
}

// Error returns QEMU's description.
func (e *QMPError) Error() string {
	return fmt.Sprintf("QMP %s: %s (%s)", e.Command, e.Desc, e.Class)
}

// DialQMP connects to the QMP socket, reads the greeting and leaves negotiation mode
// (qmp_capabilities), so commands can be executed.
func DialQMP(ctx context.Context, socket string) (*QMP, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("connect to QMP: %w", err)
	}
	q := &QMP{conn: conn, r: bufio.NewReader(conn)}
	stop := q.watch(ctx)
	var greeting struct {
		QMP *struct {
			Version struct {
				QEMU struct{ Major, Minor, Micro int } `json:"qemu"`
			} `json:"version"`
		} `json:"QMP"`
	}
	line, err := q.r.ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &greeting)
	}
	if err == nil && greeting.QMP == nil {
		err = fmt.Errorf("unexpected greeting %q", line)
	}
	stop()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("QMP greeting: %w", ctxErr(ctx, err))
	}
	v := greeting.QMP.Version.QEMU
	q.Version = fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro)
	if _, err := q.Execute(ctx, "qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

// watch makes blocking I/O on the connection give up when ctx ends; call the
// returned function when the I/O is done.
func (q *QMP) watch(ctx context.Context) (stop func()) {
	if dl, ok := ctx.Deadline(); ok {
		_ = q.conn.SetDeadline(dl)
	}
	fired := make(chan struct{})
	after := context.AfterFunc(ctx, func() {
		_ = q.conn.SetDeadline(time.Unix(1, 0))
		close(fired)
	})
	return func() {
		if !after() {
			<-fired // let it finish before clearing the deadline
		}
		_ = q.conn.SetDeadline(time.Time{})
	}
}

// ctxErr prefers the context's error when it explains err. The only I/O deadlines
// set come from ctx, so a timeout means ctx is ending; its timer may lag a little.
func ctxErr(ctx context.Context, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Execute runs one QMP command with args (nil for none) and returns the "return"
// value. QEMU's error answers come back as *QMPError.
func (q *QMP) Execute(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	stop := q.watch(ctx)
	defer stop()

	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("QMP %s: %w", cmd, err)
	}
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("QMP %s: %w", cmd, ctxErr(ctx, err))
	}
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("QMP %s: %w", cmd, ctxErr(ctx, err))
		}
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
			Event string `json:"event"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			return nil, fmt.Errorf("QMP %s: bad answer %q: %w", cmd, line, err)
		}
		switch {
		case resp.Event != "":
			continue
		case resp.Error != nil:
			return nil, &QMPError{Command: cmd, Class: resp.Error.Class, Desc: resp.Error.Desc}
		case resp.Return != nil:
			return resp.Return, nil
		}
	}
}

// Close closes the connection.
func (q *QMP) Close() error {
	return q.conn.Close()
}

// Powerdown presses the guest's power button (system_powerdown). The guest decides
// whether and when to shut down; wait for the process to exit to know.
func (q *QMP) Powerdown(ctx context.Context) error {
	_, err := q.Execute(ctx, "system_powerdown", nil)
	return err
}

// Quit stops QEMU at once, like pulling the plug. The connection closing before the
// answer arrives counts as success.
func (q *QMP) Quit(ctx context.Context) error {
	_, err := q.Execute(ctx, "quit", nil)
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// VMStatus is the answer of query-status.
type VMStatus struct {
	Running bool   `json:"running"`
	Status  string `json:"status"` // e.g. "running", "paused", "prelaunch", "shutdown"
}

// Status asks QEMU whether the guest CPUs run (query-status).
func (q *QMP) Status(ctx context.Context) (VMStatus, error) {
	raw, err := q.Execute(ctx, "query-status", nil)
	if err != nil {
		return VMStatus{}, err
	}
	var st VMStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		return VMStatus{}, fmt.Errorf("QMP query-status: %w", err)
	}
	return st, nil
}
