package main

import (
	"fmt"
	"strings"
)

// cmdline is what the fake takes from QEMU's command line; other options are
// accepted and ignored.
type cmdline struct {
	version  bool
	process  string // -name's process=
	pidFile  string
	qmp      string   // -qmp's value
	chardevs []string // -chardev values
	serials  []string // -serial values
	netdevs  []string // -netdev values
	drives   []string // -drive values
}

// noValue are the QEMU options (of those armdev and qemuvm.ProbeCaps pass,
// and a few more) that take no value.
var noValue = map[string]bool{
	"-version": true, "-no-user-config": true, "-nodefaults": true, "-S": true,
	"-snapshot": true, "-no-reboot": true, "-no-shutdown": true, "-daemonize": true,
}

func parse(args []string) (cmdline, error) {
	var cl cmdline
	for i := 0; i < len(args); i++ {
		opt := args[i]
		if strings.HasPrefix(opt, "--") {
			opt = opt[1:] // QEMU accepts both spellings
		}
		if !strings.HasPrefix(opt, "-") {
			continue // a disk image given without -drive: not armdev's
		}
		if noValue[opt] {
			cl.version = cl.version || opt == "-version"
			continue
		}
		if i+1 >= len(args) {
			return cl, fmt.Errorf("%s: requires an argument", opt)
		}
		i++
		v := args[i]
		switch opt {
		case "-name":
			if p, ok := opts(v).get("process"); ok {
				cl.process = p
			}
		case "-pidfile":
			cl.pidFile = v
		case "-qmp":
			cl.qmp = v
		case "-chardev":
			cl.chardevs = append(cl.chardevs, v)
		case "-serial":
			cl.serials = append(cl.serials, v)
		case "-netdev":
			cl.netdevs = append(cl.netdevs, v)
		case "-drive":
			cl.drives = append(cl.drives, v)
		}
	}
	return cl, nil
}

// optList is a QEMU option string split into its items: "key=value", or a
// bare value (the backend, say), with QEMU's escaping (",," for a comma)
// undone.
type optList []string

func opts(s string) optList {
	var items optList
	var item strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == ',' && i+1 < len(s) && s[i+1] == ',':
			item.WriteByte(',')
			i++
		case s[i] == ',':
			items = append(items, item.String())
			item.Reset()
		default:
			item.WriteByte(s[i])
		}
	}
	return append(items, item.String())
}

// first is the first item when it is a bare value ("socket", "user").
func (o optList) first() string {
	if len(o) == 0 || strings.Contains(o[0], "=") {
		return ""
	}
	return o[0]
}

// get is the value of the last key=value item for key, as QEMU takes it.
func (o optList) get(key string) (string, bool) {
	v, ok := "", false
	for _, item := range o {
		if k, val, found := strings.Cut(item, "="); found && k == key {
			v, ok = val, true
		}
	}
	return v, ok
}

// all are the values of every key=value item for key (hostfwd may repeat).
func (o optList) all(key string) []string {
	var vs []string
	for _, item := range o {
		if k, val, found := strings.Cut(item, "="); found && k == key {
			vs = append(vs, val)
		}
	}
	return vs
}
