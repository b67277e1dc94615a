package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// pidFile writes the pid to path and holds a POSIX lock on it for as long as
// the fake runs, as QEMU's -pidfile does (util/oslib-posix.c
// qemu_write_pidfile); a clean exit removes it if it is still the same file.
func (f *fake) pidFile(path string) error {
	file, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("cannot create PID file: Cannot open pid file: %s", strerror(err))
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	if err := unix.FcntlFlock(file.Fd(), unix.F_SETLK, &lk); err != nil {
		file.Close()
		return fmt.Errorf("cannot create PID file: Cannot lock pid file: %s", strerror(err))
	}
	err = file.Truncate(0)
	if err == nil {
		_, err = file.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	}
	if err != nil {
		file.Close()
		return fmt.Errorf("cannot create PID file: Failed to write pid file: %s", strerror(err))
	}
	// Closing any descriptor of the file drops the lock: this one stays open
	// until exit, and nothing else here opens the file.
	f.atExit(func() {
		held, err1 := file.Stat()
		now, err2 := os.Stat(path)
		if err1 == nil && err2 == nil && os.SameFile(held, now) {
			_ = os.Remove(path)
		}
		file.Close()
	})
	return nil
}

// listenUnix listens on a unix socket at path, replacing a socket file left
// there, as QEMU does. Closing the listener removes the file.
func (f *fake) listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() == fs.ModeSocket {
		_ = os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	f.atExit(func() { l.Close() })
	return l, nil
}

// console is the guest's serial port: what the guest prints goes to the log
// and to every connected client.
type console struct {
	mu    sync.Mutex
	log   *os.File // nil without logfile=
	conns map[net.Conn]bool
}

func (c *console) write(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.log != nil {
		_, _ = c.log.Write(p)
	}
	for conn := range c.conns {
		_, _ = conn.Write(p)
	}
}

// chardev makes a socket chardev (-chardev socket,id=…,path=…,server=on,
// logfile=…): the socket to attach to, the log, and, when a -serial uses
// it, the guest printing its first lines and echoing what is typed, as a
// getty does.
func (f *fake) chardev(spec string, serials map[string]bool) error {
	o := opts(spec)
	path, _ := o.get("path")
	if o.first() != "socket" || path == "" {
		return nil
	}
	c := &console{conns: map[net.Conn]bool{}}
	if logfile, ok := o.get("logfile"); ok {
		flags := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
		if v, _ := o.get("logappend"); v == "on" {
			flags = os.O_CREATE | os.O_WRONLY | os.O_APPEND
		}
		log, err := os.OpenFile(logfile, flags, 0o644)
		if err != nil {
			return fmt.Errorf("-chardev %s: Unable to open logfile %s: %s", spec, logfile, strerror(err))
		}
		f.atExit(func() { log.Close() })
		c.log = log
	}
	l, err := f.listenUnix(path)
	if err != nil {
		return fmt.Errorf("-chardev %s: Failed to bind socket to %s: %s", spec, path, strerror(err))
	}
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			c.mu.Lock()
			c.conns[conn] = true
			c.mu.Unlock()
			go func() {
				buf := make([]byte, 1024)
				for {
					n, err := conn.Read(buf)
					if n > 0 {
						c.write(buf[:n])
					}
					if err != nil {
						break
					}
				}
				c.mu.Lock()
				delete(c.conns, conn)
				c.mu.Unlock()
				conn.Close()
			}()
		}
	}()
	id, _ := o.get("id")
	if serials[id] {
		lines := f.behaviour().Serial
		if lines == nil {
			lines = []string{"", "U-Boot 2023.01 (armdev qemutest fake)", "", "DRAM:  256 MiB",
				"Hit any key to stop autoboot:  0", "Retrieving file: /boot/extlinux/extlinux.conf", "Starting kernel ..."}
		}
		for _, line := range lines {
			c.write([]byte(line + "\r\n"))
		}
	}
	return nil
}

// monitor serves QMP on -qmp unix:PATH,server=on (one client at a time, as
// QEMU does) or on stdio.
func (f *fake) monitor(spec string) error {
	o := opts(spec)
	if o.first() == "stdio" {
		go func() {
			f.serveQMP(os.Stdin, os.Stdout)
			f.exit(0, "QMP on stdio ended")
		}()
		return nil
	}
	path, ok := strings.CutPrefix(o.first(), "unix:")
	if !ok {
		return fmt.Errorf("-qmp %s: the fake QEMU serves QMP on unix: and stdio only", spec)
	}
	l, err := f.listenUnix(path)
	if err != nil {
		return fmt.Errorf("-qmp %s: Failed to bind socket to %s: %s", spec, path, strerror(err))
	}
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			f.serveQMP(conn, conn)
			conn.Close()
		}
	}()
	return nil
}

// netdev binds the host side of -netdev user's hostfwd=tcp:ADDR:PORT-:22
// rules and forwards each connection to the guest.
func (f *fake) netdev(spec string) error {
	o := opts(spec)
	if o.first() != "user" {
		return nil
	}
	for _, rule := range o.all("hostfwd") {
		host, _, _ := strings.Cut(strings.TrimPrefix(rule, "tcp:"), "-")
		l, err := net.Listen("tcp", host)
		if err != nil {
			return fmt.Errorf("-netdev %s: Could not set up host forwarding rule '%s'", spec, rule)
		}
		f.atExit(func() { l.Close() })
		go func() {
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				go f.forward(conn)
			}
		}()
	}
	return nil
}

// forward connects one connection to the forwarded port with the guest's
// sshd, as the behaviour says.
func (f *fake) forward(conn net.Conn) {
	b := f.behaviour()
	switch {
	case b.HaltAtSSH:
		conn.Close()
		f.exit(0, "the guest powered off (HaltAtSSH)")
		return
	case b.HoldSSH:
		<-f.done // silent, as slirp while it retries the guest
		conn.Close()
		return
	case b.SSH == "":
		conn.Close()
		return
	}
	guest, err := net.DialTimeout("tcp", b.SSH, 5*time.Second)
	if err != nil {
		f.logf("forward to the guest's sshd at %s: %v", b.SSH, err)
		conn.Close()
		return
	}
	go func() {
		_, _ = io.Copy(guest, conn)
		guest.Close()
		conn.Close()
	}()
	_, _ = io.Copy(conn, guest)
	guest.Close()
	conn.Close()
}

// QEMU's image locking (block/file-posix.c): a user of an image holds a
// shared OFD lock on byte lockPermBase+n for each permission n it uses and
// on byte lockSharedBase+n for each one it does not let others have, after
// checking that no one holds a byte that conflicts. A guest's disk uses
// every permission below and shares only consistent read and write
// unchanged, so qemu-img cannot write to it while the guest runs (and reads
// only with -U).
const (
	lockPermBase   = 100
	lockSharedBase = 200
)

var (
	perms    = []string{"consistent read", "write", "write unchanged", "resize"}
	unshared = []int{1, 3}
)

// drive opens -drive's file= and takes QEMU's locks on it.
func (f *fake) drive(spec string) error {
	path, ok := opts(spec).get("file")
	if !ok {
		return nil
	}
	file, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("-drive %s: Could not open '%s': %s", spec, path, strerror(err))
	}
	locked := func(off int) bool {
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart, Start: int64(off), Len: 1}
		return unix.FcntlFlock(file.Fd(), unix.F_OFD_GETLK, &lk) == nil && lk.Type != unix.F_UNLCK
	}
	conflict := ""
	for n, name := range perms {
		if locked(lockSharedBase + n) {
			conflict = fmt.Sprintf("Failed to get %q lock", name)
			break
		}
	}
	for _, n := range unshared {
		if conflict == "" && locked(lockPermBase+n) {
			conflict = fmt.Sprintf("Failed to get shared %q lock", perms[n])
		}
	}
	if conflict != "" {
		file.Close()
		return fmt.Errorf("-drive %s: %s\nIs another process using the image [%s]?", spec, conflict, path)
	}
	lock := func(off int) error {
		lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: io.SeekStart, Start: int64(off), Len: 1}
		return unix.FcntlFlock(file.Fd(), unix.F_OFD_SETLK, &lk)
	}
	for n := range perms {
		err = errors.Join(err, lock(lockPermBase+n))
	}
	for _, n := range unshared {
		err = errors.Join(err, lock(lockSharedBase+n))
	}
	if err != nil {
		file.Close()
		return fmt.Errorf("-drive %s: Failed to lock byte: %s", spec, strerror(err))
	}
	f.atExit(func() { file.Close() })
	return nil
}
