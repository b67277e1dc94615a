package guestssh

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/rsonpath/armdev/internal/atomicfile"
)

// ConfigBlock is one OpenSSH client config entry for the guest.
type ConfigBlock struct {
	// Host is the alias used on the ssh command line, e.g. "armdev".
	Host string
	// HostName is the address, normally 127.0.0.1.
	HostName string
	// Port is the forwarded port.
	Port int
	// User is the remote user.
	User string
	// IdentityFile is the absolute path of the private key.
	IdentityFile string
	// UserKnownHostsFile is the absolute path of the pinned known_hosts.
	UserKnownHostsFile string
}

// WriteConfig atomically writes path as an OpenSSH config holding c, for
// `ssh -F path HOST`: key-only login, the pinned host key checked strictly,
// no other known_hosts or identities consulted.
func WriteConfig(path string, c ConfigBlock) error {
	text, err := c.render()
	if err != nil {
		return fmt.Errorf("write ssh config: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write ssh config: %w", err)
	}
	// The atomic write names the file and what failed.
	return atomicfile.WriteFile(path, []byte(text), 0o644)
}

func (c ConfigBlock) render() (string, error) {
	for name, v := range map[string]string{"Host": c.Host, "HostName": c.HostName, "User": c.User} {
		if v == "" || strings.ContainsAny(v, " \t\r\n\"'#*?!,%") {
			return "", fmt.Errorf("%s %q is empty or has characters ssh_config cannot take", name, v)
		}
	}
	if c.Port <= 0 || c.Port > 65535 {
		return "", fmt.Errorf("port %d out of range", c.Port)
	}
	id, err := configPath("IdentityFile", c.IdentityFile)
	if err != nil {
		return "", err
	}
	kh, err := configPath("UserKnownHostsFile", c.UserKnownHostsFile)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by armdev; rewritten on each start.\n")
	fmt.Fprintf(&b, "Host %s\n", c.Host)
	fmt.Fprintf(&b, "  HostName %s\n", c.HostName)
	fmt.Fprintf(&b, "  Port %d\n", c.Port)
	fmt.Fprintf(&b, "  User %s\n", c.User)
	fmt.Fprintf(&b, "  IdentityFile %s\n", id)
	fmt.Fprintf(&b, "  IdentitiesOnly yes\n")
	fmt.Fprintf(&b, "  PreferredAuthentications publickey\n")
	fmt.Fprintf(&b, "  UserKnownHostsFile %s\n", kh)
	fmt.Fprintf(&b, "  GlobalKnownHostsFile /dev/null\n")
	fmt.Fprintf(&b, "  StrictHostKeyChecking yes\n")
	fmt.Fprintf(&b, "  UpdateHostKeys no\n")
	fmt.Fprintf(&b, "  LogLevel ERROR\n")
	return b.String(), nil
}

// configPath checks and quotes a file path for ssh_config: absolute, no
// double quote or newline, % doubled (these options expand % tokens).
func configPath(name, p string) (string, error) {
	if !filepath.IsAbs(p) || strings.ContainsAny(p, "\"\r\n") {
		return "", fmt.Errorf("%s %q must be an absolute path without double quotes or newlines", name, p)
	}
	return configQuote(strings.ReplaceAll(p, "%", "%%")), nil
}

func configQuote(s string) string {
	if strings.ContainsAny(s, " \t'#") {
		return `"` + s + `"`
	}
	return s
}
