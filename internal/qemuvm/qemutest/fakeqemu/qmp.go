package main

import (
	"encoding/json"
	"io"
	"time"
)

// qmpError is QMP's error answer.
type qmpError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

// serveQMP runs one QMP session as QEMU does: the greeting, capabilities
// negotiation, then one answer per command, with events where QEMU sends
// them. It returns when the client goes away.
func (f *fake) serveQMP(r io.Reader, w io.Writer) {
	enc := json.NewEncoder(w)
	send := func(v any) bool { return enc.Encode(v) == nil }
	greeting := map[string]any{"QMP": map[string]any{
		"version":      map[string]any{"qemu": map[string]int{"major": 7, "minor": 2, "micro": 0}, "package": "armdev qemutest fake"},
		"capabilities": []string{"oob"},
	}}
	if !send(greeting) {
		return
	}
	dec := json.NewDecoder(r)
	negotiated := false
	for {
		var req struct {
			Execute string          `json:"execute"`
			ID      json.RawMessage `json:"id,omitempty"`
		}
		if err := dec.Decode(&req); err != nil {
			return
		}
		ret, qerr, events, then := f.execute(req.Execute, &negotiated)
		resp := map[string]any{}
		if qerr != nil {
			resp["error"] = qerr
		} else {
			resp["return"] = ret
		}
		if req.ID != nil {
			resp["id"] = req.ID
		}
		if !send(resp) {
			return
		}
		for _, e := range events {
			now := time.Now()
			send(map[string]any{"event": e, "timestamp": map[string]int64{"seconds": now.Unix(), "microseconds": int64(now.Nanosecond() / 1000)}})
		}
		if then != nil {
			then()
		}
	}
}

// execute runs one command: its answer (a return value or an error), the
// events that follow it, and what happens after they are sent.
func (f *fake) execute(cmd string, negotiated *bool) (ret any, qerr *qmpError, events []string, then func()) {
	empty := struct{}{}
	switch {
	case cmd == "qmp_capabilities" && *negotiated:
		return nil, &qmpError{"CommandNotFound", "Capabilities negotiation is already complete, command ignored"}, nil, nil
	case cmd == "qmp_capabilities":
		*negotiated = true
		return empty, nil, nil, nil
	case !*negotiated:
		return nil, &qmpError{"CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'"}, nil, nil
	}
	b := f.behaviour()
	switch cmd {
	case "query-status":
		return map[string]any{"status": "running", "singlestep": false, "running": true}, nil, nil, nil
	case "system_powerdown":
		if b.IgnorePowerButton {
			f.logf("system_powerdown: the guest ignores the power button")
			return empty, nil, []string{"POWERDOWN"}, nil
		}
		return empty, nil, []string{"POWERDOWN"}, func() {
			time.AfterFunc(b.PowerdownDelay, func() { f.exit(0, "the guest powered off (power button)") })
		}
	case "quit":
		if b.RefuseQuit {
			return nil, &qmpError{"GenericError", "quit refused (qemutest.Behaviour.RefuseQuit)"}, nil, nil
		}
		return empty, nil, []string{"SHUTDOWN"}, func() { f.exit(0, "QMP quit") }
	}
	return nil, &qmpError{"CommandNotFound", "The command " + cmd + " has not been found"}, nil, nil
}
