package guestssh

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// DefaultPoll is WaitReady's poll interval when none is given.
const DefaultPoll = 150 * time.Millisecond

// ErrAuthRefused is matched (errors.Is) by the error WaitReady returns when
// the guest's sshd keeps refusing the key.
var ErrAuthRefused = errors.New("guest refused the key")

// AuthRefusedError says that the guest's sshd at Addr answered but refused
// the workspace key for User for longer than Options.AuthGrace. It matches
// ErrAuthRefused. The caller knows why that may be and what to do.
type AuthRefusedError struct {
	// Addr is the guest's host:port as dialled.
	Addr string
	// User is the user the key was offered for.
	User string
	// For is how long the refusals lasted.
	For time.Duration
	// Err is the last refusal.
	Err error
}

// Error says who refused what, for how long.
func (e *AuthRefusedError) Error() string {
	return fmt.Sprintf("the guest at %s refused the workspace key for user %s for %s", e.Addr, e.User, e.For.Round(time.Second/10))
}

// Is reports whether target is ErrAuthRefused.
func (e *AuthRefusedError) Is(target error) bool { return target == ErrAuthRefused }

// Unwrap returns the last refusal.
func (e *AuthRefusedError) Unwrap() error { return e.Err }

// A check is one thing WaitReady waits for, after Lima's hostagent
// requirements: what must hold, the stages of a connection attempt that
// test it, and what the user can do when it keeps failing.
type check struct {
	description string
	stages      []Stage
	hint        string // "" when the error itself says what to do
	// fatal ends the wait at the first failure: waiting cannot fix it.
	fatal bool
	// grace, when set, ends the wait once the check has failed for that
	// long in a row, with the error giveUp makes of the last failure.
	grace  time.Duration
	giveUp func(failingFor time.Duration, last error) error
}

// readiness lists the checks in the order a login meets them.
func readiness(o Options) []check {
	return []check{{
		description: "the guest's sshd answers",
		stages:      []Stage{StageConnect, StageHandshake},
		hint:        "the guest has not finished booting, or its network or sshd did not come up",
	}, {
		description: "the guest's host key matches the pin",
		stages:      []Stage{StageHostKey},
		fatal:       true,
	}, {
		description: "the workspace key logs in as " + o.User,
		stages:      []Stage{StageAuth},
		hint:        "the guest does not accept " + o.Key.PrivatePath + ".pub for " + o.User,
		grace:       o.authGrace(),
		giveUp: func(d time.Duration, last error) error {
			return &AuthRefusedError{Addr: o.Addr, User: o.User, For: d, Err: last}
		},
	}}
}

// failure is a check's run of failures, which ends when an attempt gets
// past the check: since when it has failed, and the latest error.
type failure struct {
	since time.Time
	err   error
}

// WaitReady logs in to the guest as soon as it lets us: it makes a
// connection attempt at every poll interval (DefaultPoll if 0) and returns
// the first client that logs in. An attempt that stays silent (QEMU's
// forward before the guest's network is up) does not hold up the polling;
// see answering. A host key mismatch ends the wait at once, and a key
// refused for Options.AuthGrace ends it with an *AuthRefusedError. When ctx
// ends first, the error lists each check still failing with its last error
// and a hint. onTick, if not nil, is called at every poll.
func WaitReady(ctx context.Context, o Options, poll time.Duration, onTick func()) (*Client, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	if poll <= 0 {
		poll = DefaultPoll
	}
	start := time.Now()
	checks := readiness(o)
	failing := make([]failure, len(checks))
	for conn, err := range answering(ctx, o.Addr, poll, min(o.timeout(), silentLimit), onTick) {
		if err == nil {
			var c *Client
			if c, err = login(ctx, conn, o); err == nil {
				return c, nil
			}
		}
		i := slices.IndexFunc(checks, func(c check) bool { return slices.Contains(c.stages, stageOf(err)) })
		if expired(ctx) && slices.ContainsFunc(failing, func(f failure) bool { return f.err != nil }) {
			continue // an attempt cut short by ctx says less than those before
		}
		clear(failing[:i]) // the attempt got past these
		if failing[i].err == nil {
			failing[i].since = time.Now()
		}
		failing[i].err = err
		switch c := checks[i]; {
		case c.fatal:
			return nil, err
		case c.grace > 0 && time.Since(failing[i].since) >= c.grace:
			return nil, c.giveUp(time.Since(failing[i].since), err)
		}
	}
	return nil, notReady(ctx, o.Addr, time.Since(start), checks, failing)
}

// stageOf is the stage at which a connection attempt failed.
func stageOf(err error) Stage {
	var d *DialError
	switch {
	case errors.As(err, &d):
		return d.Stage
	case errors.Is(err, ErrHostKeyMismatch):
		return StageHostKey
	default:
		return StageHandshake
	}
}

// notReady is WaitReady's error when ctx ends: the checks still failing,
// in order, each with its latest error and hint, on one line.
func notReady(ctx context.Context, addr string, took time.Duration, checks []check, failing []failure) error {
	var msgs []string
	var errs []error
	for i, f := range failing {
		if f.err == nil {
			continue
		}
		cause := f.err.Error()
		if d := (*DialError)(nil); errors.As(f.err, &d) {
			cause = d.cause() // the address is said once, up front
		}
		msg := fmt.Sprintf("%q failed (%s)", checks[i].description, cause)
		if checks[i].hint != "" {
			msg += ": " + checks[i].hint
		}
		msgs, errs = append(msgs, msg), append(errs, f.err)
	}
	if len(errs) == 0 { // no attempt ended before ctx did
		msgs, errs = []string{ctx.Err().Error()}, []error{ctx.Err()}
	}
	return &notReadyError{
		msg:  fmt.Sprintf("guest at %s not ready over SSH after %s: %s", addr, took.Round(time.Second/10), strings.Join(msgs, "; ")),
		errs: errs,
	}
}

// notReadyError keeps the failures behind its message for errors.Is and As.
type notReadyError struct {
	msg  string
	errs []error
}

func (e *notReadyError) Error() string   { return e.msg }
func (e *notReadyError) Unwrap() []error { return e.errs }

// expired reports whether ctx is done or its deadline has passed (the
// network stack may see the deadline before ctx's own timer fires).
func expired(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}
