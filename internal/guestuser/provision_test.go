package guestuser_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rsonpath/armdev/internal/guestuser"
	"github.com/rsonpath/armdev/internal/nixoseval"
)

// provisionRun is one run of init/root/armdev-provision.sh in a private
// user and mount namespace whose /etc is a fake: a stock image's /etc after
// its first boot (the installer's configuration.nix, an image account with
// uid 501) plus the identity armdev uploads.
type provisionRun struct {
	etc, share, log string
	out             string
	err             error
}

// runProvision runs the script; setup is shell run inside the namespace
// before it (e.g. a mount already on /etc/nixos).
func runProvision(t *testing.T, identity []byte, shareConfig bool, setup string) provisionRun {
	t.Helper()
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("unshare is not installed")
	}
	if err := exec.CommandContext(t.Context(), unshare, "-rm", "true").Run(); err != nil {
		t.Skipf("no unprivileged user namespaces here (unshare -rm: %v)", err)
	}
	mount, err := exec.LookPath("mount")
	if err != nil {
		t.Skip("mount is not installed")
	}
	script := filepath.Join(filepath.Dir(filepath.Dir(nixoseval.ConfigDir(t))), "..", "init", "root", "armdev-provision.sh")
	dir := t.TempDir()
	r := provisionRun{etc: filepath.Join(dir, "etc"), share: filepath.Join(dir, "share"), log: filepath.Join(dir, "log")}
	bin := filepath.Join(dir, "bin")
	files := map[string]string{
		"etc/nixos/configuration.nix": "# the installer's clone-config.nix\n",
		"etc/passwd":                  "root:x:0:0:System administrator:/root:/bin/sh\nnixos:x:1000:100::/home/nixos:/bin/sh\nnscd:x:501:501::/var/empty:/bin/nologin\n",
		"etc/group":                   "root:x:0:\nusers:x:100:\nnscd:x:501:\n",
		// The 9p mount, as far as the script can tell: the share bound
		// onto /etc/nixos (the real mount binary is outside PATH's bin).
		"bin/mount": "#!/bin/sh\necho \"mount $*\" >>\"$LOG\"\nexec " + mount + " --bind \"$SHARE\" /etc/nixos\n",
		// The switch creates the guest user with the identity's uid.
		"bin/nixos-rebuild": "#!/bin/sh\necho \"nixos-rebuild $*\" >>\"$LOG\"\necho 'armdev:x:501:998::/home/armdev:/bin/sh' >>/etc/passwd\n",
	}
	if identity != nil {
		files["etc/armdev/identity.nix"] = string(identity)
	}
	if shareConfig {
		files["share/configuration.nix"] = "# ours\n"
	}
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(r.share, 0o755); err != nil {
		t.Fatal(err)
	}
	// Tools reached through /etc (Debian's /etc/alternatives/awk) are
	// linked from bin, which the fake /etc does not hide.
	for _, tool := range []string{"awk", "sed"} {
		path, err := exec.LookPath(tool)
		if err != nil {
			t.Skipf("%s is not installed", tool)
		}
		if path, err = filepath.EvalSymlinks(path); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(path, filepath.Join(bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	// The dynamic loader reads /etc/ld.so.cache: keep it under the fake.
	if b, err := os.ReadFile("/etc/ld.so.cache"); err == nil {
		if err := os.WriteFile(filepath.Join(r.etc, "ld.so.cache"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	inner := `set -e; ` + mount + ` --bind "$ETC" /etc; ` + setup + `; PATH="$BIN:$PATH" exec sh "$SCRIPT"`
	cmd := exec.CommandContext(t.Context(), unshare, "-rm", "sh", "-c", inner)
	cmd.Env = append(os.Environ(), "ETC="+r.etc, "BIN="+bin, "SCRIPT="+script, "SHARE="+r.share, "LOG="+r.log)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	r.err = cmd.Run()
	r.out = out.String()
	t.Logf("armdev-provision.sh:\n%s", r.out)
	return r
}

func (r provisionRun) logged() string {
	b, _ := os.ReadFile(r.log)
	return string(b)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestProvisionFirstBoot: the installer's configuration goes, the share is
// mounted with configuration.nix's options, the switch runs, and an image
// account sharing the guest user's uid is reported.
func TestProvisionFirstBoot(t *testing.T) {
	r := runProvision(t, guestuser.Render(guestuser.For(501, 20, "armdev"), "26.05", []string{testKey}), true, "true")
	if r.err != nil {
		t.Fatalf("provisioning failed: %v", r.err)
	}
	if exists(filepath.Join(r.etc, "nixos", "configuration.nix")) {
		t.Error("the installer's configuration.nix is still on the disk")
	}
	if !exists(filepath.Join(r.share, "configuration.nix")) {
		t.Error("the share's configuration.nix is gone")
	}
	want := "mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none nixconfig /etc/nixos\nnixos-rebuild switch\n"
	if got := r.logged(); got != want {
		t.Errorf("ran:\n%s\nwant:\n%s", got, want)
	}
	if !strings.Contains(r.out, "warning: armdev shares uid 501 with nscd") {
		t.Error("the shared uid is not reported")
	}
}

// TestProvisionKeepsMountedFiles: when /etc/nixos is already a mount point
// that is not the 9p share, nothing on it is deleted and nothing runs.
func TestProvisionKeepsMountedFiles(t *testing.T) {
	r := runProvision(t, guestuser.Render(guestuser.For(1000, 1000, "armdev"), "26.05", []string{testKey}), true,
		`echo '# the user'"'"'s own' >"$SHARE/configuration.nix"; mount --bind "$SHARE" /etc/nixos`)
	if r.err == nil {
		t.Fatal("provisioning succeeded on a foreign mount")
	}
	if b, err := os.ReadFile(filepath.Join(r.share, "configuration.nix")); err != nil || !strings.Contains(string(b), "the user's own") {
		t.Errorf("a file on the mounted /etc/nixos was touched: %q, %v", b, err)
	}
	if got := r.logged(); got != "" {
		t.Errorf("ran %q", got)
	}
	if !strings.Contains(r.out, "not from armdev's 9p share") {
		t.Errorf("no explanation in %q", r.out)
	}
}

// TestProvisionNeedsIdentity: without the uploaded identity the script
// stops before it changes anything, and says why.
func TestProvisionNeedsIdentity(t *testing.T) {
	r := runProvision(t, nil, true, "true")
	if r.err == nil {
		t.Fatal("provisioning succeeded without an identity")
	}
	if !exists(filepath.Join(r.etc, "nixos", "configuration.nix")) {
		t.Error("the installer's configuration was removed although the script stopped")
	}
	if got := r.logged(); got != "" {
		t.Errorf("ran %q", got)
	}
	if !strings.Contains(r.out, "/etc/armdev/identity.nix is missing") {
		t.Errorf("no explanation in %q", r.out)
	}
}

// TestProvisionNeedsConfiguration: an empty share stops before the switch.
func TestProvisionNeedsConfiguration(t *testing.T) {
	r := runProvision(t, guestuser.Render(guestuser.For(1000, 1000, "armdev"), "26.05", []string{testKey}), false, "true")
	if r.err == nil {
		t.Fatal("provisioning succeeded without configuration.nix")
	}
	if strings.Contains(r.logged(), "nixos-rebuild") {
		t.Error("nixos-rebuild ran")
	}
	if !strings.Contains(r.out, "configuration.nix is missing on the configuration share") {
		t.Errorf("no explanation in %q", r.out)
	}
}
