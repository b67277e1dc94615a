package guestssh

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/rsonpath/armdev/internal/atomicfile"
)

// ErrHostKeyMismatch is matched (errors.Is) by the error returned when the
// guest presents a host key other than the pinned one.
var ErrHostKeyMismatch = errors.New("host key mismatch")

// HostKeyMismatchError says that the host key at Addr differs from the one
// pinned in Path. It matches ErrHostKeyMismatch.
type HostKeyMismatchError struct {
	// Addr is the guest's host:port as dialled.
	Addr string
	// Path is the known_hosts file holding the pin.
	Path string
}

// Error gives the one-line explanation and what to do.
func (e *HostKeyMismatchError) Error() string {
	return fmt.Sprintf("host key of the guest at %s changed (pinned in %s): if you rebuilt or reset the disk yourself, remove that file; otherwise someone else may be answering on that port", e.Addr, e.Path)
}

// Is reports whether target is ErrHostKeyMismatch.
func (e *HostKeyMismatchError) Is(target error) bool { return target == ErrHostKeyMismatch }

// KnownHosts pins guests' host keys in an OpenSSH known_hosts file, one
// entry per host:port, usable as OpenSSH's UserKnownHostsFile.
type KnownHosts struct {
	// Path is the known_hosts file; it is created on first pin.
	Path string
}

// Callback returns a host key callback that pins the key on first contact
// and refuses a different key later with a *HostKeyMismatchError. With
// allowRepin (right after the tool itself reset or rebuilt the disk) a
// different key replaces the pin instead.
func (k KnownHosts) Callback(allowRepin bool) ssh.HostKeyCallback {
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		addr := hostname
		if addr == "" {
			addr = remote.String()
		}
		err := k.check(addr, remote, key)
		var keyErr *knownhosts.KeyError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &keyErr) && len(keyErr.Want) == 0:
			return k.pin(addr, key)
		case errors.As(err, &keyErr) && allowRepin:
			return k.pin(addr, key)
		case errors.As(err, &keyErr):
			return &HostKeyMismatchError{Addr: addr, Path: k.Path}
		default:
			return err
		}
	}
}

func (k KnownHosts) check(addr string, remote net.Addr, key ssh.PublicKey) error {
	if _, err := os.Stat(k.Path); errors.Is(err, fs.ErrNotExist) {
		return &knownhosts.KeyError{}
	}
	cb, err := knownhosts.New(k.Path)
	if err != nil {
		return fmt.Errorf("known hosts %s is unreadable (%v): remove it", k.Path, err)
	}
	return cb(addr, remote, key)
}

// pin replaces all entries for addr with one for key.
func (k KnownHosts) pin(addr string, key ssh.PublicKey) error {
	lines, err := k.otherLines(addr)
	if err != nil {
		return err
	}
	lines = append(lines, knownhosts.Line([]string{addr}, key))
	if err := k.write(lines); err != nil {
		return fmt.Errorf("pin host key of %s: %w", addr, err)
	}
	return nil
}

// Forget removes the pin for addr (host:port), if any.
func (k KnownHosts) Forget(addr string) error {
	lines, err := k.otherLines(addr)
	if err != nil {
		return err
	}
	if err := k.write(lines); err != nil {
		return fmt.Errorf("forget host key of %s: %w", addr, err)
	}
	return nil
}

// Pinned returns the pinned keys for addr (host:port); none if unknown.
func (k KnownHosts) Pinned(addr string) ([]ssh.PublicKey, error) {
	var keys []ssh.PublicKey
	err := k.eachLine(func(line []byte) {
		_, hosts, key, _, _, err := ssh.ParseKnownHosts(line)
		if err == nil && hostsMatch(hosts, addr) {
			keys = append(keys, key)
		}
	})
	return keys, err
}

// HostKeyAlgorithms returns the host key algorithms to ask addr for: those
// of the pinned keys, or, before the first contact, a list preferring
// ssh-ed25519 (which OpenSSH prefers as well).
func (k KnownHosts) HostKeyAlgorithms(addr string) []string {
	keys, err := k.Pinned(addr)
	if err != nil || len(keys) == 0 {
		return defaultHostKeyAlgorithms()
	}
	var algos []string
	for _, key := range keys {
		switch t := key.Type(); t {
		case ssh.KeyAlgoRSA:
			algos = append(algos, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256)
		default:
			algos = append(algos, t)
		}
	}
	return algos
}

func defaultHostKeyAlgorithms() []string {
	return []string{
		ssh.KeyAlgoED25519,
		ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
		ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256,
	}
}

// otherLines returns the file's lines except the entries for addr.
func (k KnownHosts) otherLines(addr string) ([]string, error) {
	var keep []string
	err := k.eachLine(func(line []byte) {
		_, hosts, _, _, _, err := ssh.ParseKnownHosts(line)
		if err == nil && hostsMatch(hosts, addr) {
			return
		}
		keep = append(keep, string(line))
	})
	return keep, err
}

func (k KnownHosts) eachLine(f func(line []byte)) error {
	data, err := os.ReadFile(k.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("known hosts: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if line := bytes.TrimSpace(sc.Bytes()); len(line) > 0 {
			f(line)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("known hosts %s: %w", k.Path, err)
	}
	return nil
}

func (k KnownHosts) write(lines []string) error {
	if err := os.MkdirAll(filepath.Dir(k.Path), 0o700); err != nil {
		return err
	}
	data := strings.Join(lines, "\n")
	if data != "" {
		data += "\n"
	}
	return atomicfile.WriteFile(k.Path, []byte(data), 0o600)
}

// hostsMatch reports whether one of a line's plain host entries is addr.
func hostsMatch(hosts []string, addr string) bool {
	want := knownhosts.Normalize(addr)
	for _, h := range hosts {
		if knownhosts.Normalize(h) == want {
			return true
		}
	}
	return false
}
