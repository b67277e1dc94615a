package guestssh

import (
	"bufio"
	"context"
	"fmt"
	"iter"
	"net"
	"sync"
	"time"
)

// Behind QEMU's user-mode network a connection made before the guest's
// network is up is accepted at once and then hangs: slirp retries its SYN
// to the guest with back-off, so such a connection can stay silent for
// seconds after the guest's sshd answers a new one. So WaitReady does not
// wait for a silent connection alone: once the youngest has been silent for
// respawnAfter, the next poll starts another beside it. With the 150 ms
// poll that is every 300 ms, which with the login keeps the time from sshd
// answering to WaitReady returning within its 0.5 s aim. A connection
// silent for silentLimit is given up (an sshd that slow to send its banner
// is not waited for), so at most silentLimit/respawnAfter (16) are open.
const (
	respawnAfter = 250 * time.Millisecond
	silentLimit  = 4 * time.Second
)

// answering yields, until ctx ends or the caller stops, each TCP
// connection to addr on which the server has started talking (sshd sends
// its banner first) and the error of each attempt that failed. It starts an
// attempt at once and then at each poll, unless the youngest one was
// started less than respawnAfter ago and is still waiting; an attempt
// silent for limit fails. onTick, if not nil, runs at each poll.
func answering(ctx context.Context, addr string, poll, limit time.Duration, onTick func()) iter.Seq2[net.Conn, error] {
	type result struct {
		id   int
		conn net.Conn
		err  error
	}
	return func(yield func(net.Conn, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		results := make(chan result)
		var wg sync.WaitGroup
		defer func() { // end the attempts still waiting, and close late answers
			cancel()
			go func() { wg.Wait(); close(results) }()
			for r := range results {
				if r.conn != nil {
					r.conn.Close()
				}
			}
		}()
		t := time.NewTicker(poll)
		defer t.Stop()
		var youngest struct {
			id      int
			started time.Time
			done    bool
		}
		for due := true; ; {
			if due {
				youngest.id, youngest.started, youngest.done = youngest.id+1, time.Now(), false
				wg.Add(1)
				go func(id int) {
					defer wg.Done()
					conn, err := knock(ctx, addr, limit)
					results <- result{id, conn, err}
				}(youngest.id)
			}
			select {
			case <-ctx.Done():
				return
			case r := <-results:
				youngest.done = youngest.done || r.id == youngest.id
				if !yield(r.conn, r.err) {
					return
				}
				due = false
			case <-t.C:
				if onTick != nil {
					onTick()
				}
				due = youngest.done || time.Since(youngest.started) >= respawnAfter
			}
		}
	}
}

// knock connects to addr and waits, at most limit, for the server to send
// something. The connection it returns still holds what was sent.
func knock(ctx context.Context, addr string, limit time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, limit, fmt.Errorf("nothing received within %s", limit))
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &DialError{Addr: addr, Stage: StageConnect, Err: err}
	}
	stopClose := context.AfterFunc(ctx, func() { conn.Close() })
	r := bufio.NewReader(conn)
	_, err = r.Peek(1)
	if !stopClose() {
		err = context.Cause(ctx)
	}
	if err != nil {
		conn.Close()
		return nil, &DialError{Addr: addr, Stage: StageHandshake, Err: fmt.Errorf("waiting for the SSH banner: %w", err)}
	}
	return &peekedConn{Conn: conn, r: r}, nil
}

// peekedConn is a connection whose first bytes were read ahead into r.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
