package guestssh

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rsonpath/armdev/internal/guestssh/sshtest"
)

// sshEnv is the environment for the system ssh client: no agent.
func sshEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "SSH_AUTH_SOCK=") {
			env = append(env, e)
		}
	}
	return env
}

func TestWriteConfigParsedByOpenSSH(t *testing.T) {
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("no OpenSSH client")
	}
	dir := filepath.Join(t.TempDir(), "my state")
	cfg := filepath.Join(dir, "ssh.config")
	block := ConfigBlock{
		Host: "armdev-test", HostName: "127.0.0.1", Port: 40222, User: "armdev",
		IdentityFile: filepath.Join(dir, "id_ed25519"), UserKnownHostsFile: filepath.Join(dir, "known_hosts"),
	}
	if err := WriteConfig(cfg, block); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ssh", "-G", "-F", cfg, "armdev-test").Output()
	if err != nil {
		t.Fatalf("ssh -G: %v", err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok {
			got[k] = v
		}
	}
	for k, want := range map[string]string{
		"hostname": "127.0.0.1", "port": "40222", "user": "armdev",
		"identityfile": block.IdentityFile, "userknownhostsfile": block.UserKnownHostsFile,
		"identitiesonly": "yes", "stricthostkeychecking": "true", "loglevel": "ERROR",
		"globalknownhostsfile": "/dev/null", "updatehostkeys": "false",
	} {
		if got[k] != want {
			t.Errorf("ssh -G %s = %q, want %q", k, got[k], want)
		}
	}

	for _, bad := range []ConfigBlock{
		{Host: "two words", HostName: "127.0.0.1", Port: 1, User: "u", IdentityFile: "/k", UserKnownHostsFile: "/h"},
		{Host: "h", HostName: "127.0.0.1", Port: 0, User: "u", IdentityFile: "/k", UserKnownHostsFile: "/h"},
		{Host: "h", HostName: "127.0.0.1", Port: 1, User: "u", IdentityFile: "relative", UserKnownHostsFile: "/h"},
		{Host: "h", HostName: "127.0.0.1", Port: 1, User: "u", IdentityFile: "/k", UserKnownHostsFile: "/a\"b"},
	} {
		if err := WriteConfig(filepath.Join(dir, "bad.config"), bad); err == nil {
			t.Errorf("WriteConfig(%+v) accepted", bad)
		}
	}
}

// TestOpenSSHClient proves that the system ssh, given only our config file,
// logs in with our key and checks the host key our KnownHosts pinned.
func TestOpenSSHClient(t *testing.T) {
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("no OpenSSH client")
	}
	dir := filepath.Join(t.TempDir(), "state 100% mine")
	key, err := EnsureKey(filepath.Join(dir, "ssh"))
	if err != nil {
		t.Fatal(err)
	}
	srv := sshtest.NewServer(t, sshtest.Options{Authorized: authorized(key)})
	kh := KnownHosts{Path: filepath.Join(dir, "ssh", "known_hosts")}
	c, err := Dial(t.Context(), Options{Addr: srv.Addr(), User: "armdev", Key: key, HostKey: kh.Callback(false), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	cfg := filepath.Join(dir, "ssh.config")
	if err := WriteConfig(cfg, ConfigBlock{
		Host: "armdev", HostName: "127.0.0.1", Port: srv.Port(), User: "armdev",
		IdentityFile: key.PrivatePath, UserKnownHostsFile: kh.Path,
	}); err != nil {
		t.Fatal(err)
	}
	ssh := func() (string, string, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "ssh", "-F", cfg, "-o", "BatchMode=yes", "armdev", "echo", "ok")
		cmd.Env = sshEnv()
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		return out.String(), errb.String(), err
	}
	out, stderr, err := ssh()
	if err != nil || out != "ok\n" {
		t.Fatalf("ssh -F %s armdev echo ok: %v, out %q, stderr %q", cfg, err, out, stderr)
	}

	// The pin is enforced: a different host key makes OpenSSH refuse.
	srv.SetHostKey(sshtest.NewSigner(t))
	out, stderr, err = ssh()
	if err == nil || out != "" || !strings.Contains(stderr, "HOST IDENTIFICATION HAS CHANGED") {
		t.Errorf("ssh with a changed host key: %v, out %q, stderr %q", err, out, stderr)
	}
}
