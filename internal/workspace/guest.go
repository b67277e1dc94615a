package workspace

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/rsonpath/armdev/internal/devshell"
	"github.com/rsonpath/armdev/internal/guestssh"
	"github.com/rsonpath/armdev/internal/instance"
)

// sshOptions are the client settings for user on the VM of rec.
func (w *Workspace) sshOptions(user string, rec instance.RunRecord, repin bool) (guestssh.Options, error) {
	key, err := guestssh.EnsureKey(w.l.SSHDir())
	if err != nil {
		return guestssh.Options{}, err
	}
	kh := guestssh.KnownHosts{Path: w.l.KnownHosts()}
	addr := fmt.Sprintf("127.0.0.1:%d", rec.SSHPort)
	return guestssh.Options{
		Addr: addr, User: user, Key: key, HostKey: kh.Callback(repin),
		HostKeyAlgorithms: kh.HostKeyAlgorithms(addr), Timeout: 20 * time.Second, KeepAlive: 30 * time.Second,
		AuthGrace: w.authGrace,
	}, nil
}

// connect returns an SSH connection to the running guest as its user, or
// an error that says what to do.
func (w *Workspace) connect(ctx context.Context) (*guestssh.Client, instance.DiskMeta, error) {
	m, err := w.provisioned()
	if err != nil {
		return nil, m, err
	}
	vm, rec, recErr := w.guest()
	st, err := vm.Status()
	if err != nil {
		return nil, m, err
	}
	if !st.Running {
		return nil, m, errors.New("the guest is not running: start it with `just arm-dev`")
	}
	if recErr != nil {
		return nil, m, recErr
	}
	opts, err := w.sshOptions(m.User(), rec, m.RepinHostKey)
	if err != nil {
		return nil, m, err
	}
	c, err := guestssh.Dial(ctx, opts)
	if err != nil {
		if errors.Is(err, guestssh.ErrHostKeyMismatch) {
			return nil, m, err // its message says what happened and what to do
		}
		return nil, m, fmt.Errorf("connect to the guest: %w", err)
	}
	if err := w.afterContact(m); err != nil {
		c.Close()
		return nil, m, err
	}
	return c, m, nil
}

// afterContact clears the one-time permission to pin a new host key, now
// that a key is pinned.
func (w *Workspace) afterContact(m instance.DiskMeta) error {
	if !m.RepinHostKey {
		return nil
	}
	m.RepinHostKey = false
	if err := w.l.SaveDisk(m); err != nil {
		return fmt.Errorf("record the pinned host key: %w", err)
	}
	return nil
}

// devShell is the project's dev environment as arm-dev-ssh uses it: none
// with ARMDEV_NIX_SHELL=0.
func (w *Workspace) devShell() (devshell.Spec, error) {
	if !w.Cfg.NixShell {
		return devshell.Spec{GuestDir: devshell.DefaultGuestDir}, nil
	}
	spec, err := devshell.Detect(w.Cfg.Share)
	if err != nil {
		return spec, fmt.Errorf("find the project's dev shell: %w", err)
	}
	return spec, nil
}

// SSH runs args in the guest's /rsonpath, inside the project's dev
// environment when it has one (a shell when args is empty), and returns
// the remote exit status.
func (w *Workspace) SSH(ctx context.Context, args []string) (int, error) {
	spec, err := w.devShell()
	if err != nil {
		return 0, err
	}
	c, _, err := w.connect(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if len(args) == 0 {
		term := os.Getenv("TERM")
		if term == "" {
			term = "xterm-256color"
		}
		return c.Shell(ctx, spec.Shell(), w.In, os.Stdout, term)
	}
	return c.Run(ctx, spec.Command(args), w.In, w.Out, w.Err)
}

// ShellRefresh evaluates the project's dev environment in the guest anew,
// for when a file it depends on changed where the cache key does not look.
func (w *Workspace) ShellRefresh(ctx context.Context) error {
	spec, err := w.devShell()
	if err != nil {
		return err
	}
	if spec.Kind == devshell.None {
		w.say("the project has no dev shell (shell.nix, default.nix or a flake with devShells), or ARMDEV_NIX_SHELL=0: nothing to refresh")
		return nil
	}
	if err := w.remote(ctx, "refresh the dev shell", spec.RefreshCommand(), nil); err != nil {
		return err
	}
	w.say("the dev shell is evaluated and cached")
	return nil
}

// remote runs a maintenance command in the running guest with live output
// and turns a failure into a one-line error.
func (w *Workspace) remote(ctx context.Context, what, cmd string, stdin []byte) error {
	c, _, err := w.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return runChecked(ctx, c, what, cmd, stdin, w.Out, w.Err)
}

// shareCheck prints the file system mounted at /etc/nixos (device and
// type), then "config" when configuration.nix is there.
const shareCheck = `awk '$2 == "/etc/nixos" { m = $1 " " $3 } END { print m }' /proc/mounts; test -f /etc/nixos/configuration.nix && echo config`

// Update applies share/etc/nixos with `sudo nixos-rebuild switch`, after
// uploading the workspace's identity. It refuses unless /etc/nixos in the
// guest is armdev's configuration share: otherwise the switch would apply
// whatever the guest's own disk holds there.
func (w *Workspace) Update(ctx context.Context) error {
	lk, err := w.lock(ctx, "update")
	if err != nil {
		return err
	}
	defer lk.Release()
	c, m, err := w.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	var out strings.Builder
	if _, err := c.Run(ctx, shareCheck, nil, &out, nil); err != nil {
		return fmt.Errorf("look at /etc/nixos in the guest: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if lines[0] != "nixconfig 9p" || len(lines) < 2 || lines[1] != "config" {
		mounted := lines[0]
		if mounted == "" {
			mounted = "nothing is mounted there"
		}
		return fmt.Errorf("/etc/nixos in the guest is not armdev's configuration share (%s): refusing to switch to what the guest's disk holds there; restart the guest (`just arm-dev-shutdown`, `just arm-dev`) or run `sudo mount /etc/nixos` in it, then try again", mounted)
	}
	id, identity, err := w.identity(m)
	if err != nil {
		return err
	}
	digest, err := w.appliedDigest(identity)
	if err != nil {
		return err
	}
	if err := runChecked(ctx, c, "upload the identity", "sudo sh -c "+guestssh.Quote([]string{uploadIdentity}), identity, w.Out, w.Err); err != nil {
		return err
	}
	if err := runChecked(ctx, c, "nixos-rebuild switch", "sudo nixos-rebuild switch", nil, w.Out, w.Err); err != nil {
		return fmt.Errorf("%w: see the output above", err)
	}
	if err := w.applied(m, id, digest, identity); err != nil {
		return err
	}
	w.say("configuration applied")
	return nil
}

// tidyCommand deletes old generations (the user's, and the system's but
// the two extlinux keeps) and collects nix garbage, as the original did.
// GC roots (the dev shell's profile among them) are kept.
const tidyCommand = `set -e
nix-env --delete-generations +1
sudo nix-env --profile /nix/var/nix/profiles/system --delete-generations +2
sudo nix-store --gc`

// Tidy frees space in the guest's nix store.
func (w *Workspace) Tidy(ctx context.Context) error {
	lk, err := w.lock(ctx, "tidy")
	if err != nil {
		return err
	}
	defer lk.Release()
	if err := w.remote(ctx, "tidy", tidyCommand, nil); err != nil {
		return err
	}
	w.say("old generations deleted and nix garbage collected")
	return nil
}

// SSHConfig writes an OpenSSH config block for the guest and says how to
// use it with ssh, scp, rsync and VS Code.
func (w *Workspace) SSHConfig(ctx context.Context) error {
	key, err := guestssh.EnsureKey(w.l.SSHDir())
	if err != nil {
		return err
	}
	user := w.Cfg.User
	if m, err := w.provisioned(); err == nil {
		user = m.User()
	}
	port := w.Cfg.SSHPort
	vm, rec, recErr := w.guest()
	if st, _ := vm.Status(); st.Running && recErr == nil {
		port = rec.SSHPort
	}
	block := guestssh.ConfigBlock{
		Host: "armdev", HostName: "127.0.0.1", Port: port, User: user,
		IdentityFile: key.PrivatePath, UserKnownHostsFile: w.l.KnownHosts(),
	}
	cfg := w.l.SSHConfig()
	if err := guestssh.WriteConfig(cfg, block); err != nil {
		return err
	}
	w.say("wrote %s", cfg)
	w.say("  ssh -F %q armdev", cfg)
	w.say("  scp -F %q FILE armdev:/rsonpath/", cfg)
	w.say("  rsync -e \"ssh -F %s\" -a DIR armdev:/rsonpath/", cfg)
	w.say("  VS Code Remote-SSH, or plain `ssh armdev`: add `Include %s` at the top of ~/.ssh/config", cfg)
	return nil
}
