// Package workspace is armdev's orchestration: it ties the configuration,
// the download, the disk preparation, QEMU and SSH together into the steps
// the mage targets run, and decides what has to be rebuilt.
package workspace

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/rsonpath/armdev/internal/config"
	"github.com/rsonpath/armdev/internal/stamp"
)

// Workspace is one armdev machine: its settings and its state directory.
type Workspace struct {
	// Cfg is the validated configuration.
	Cfg config.Config
	// In is where answers to questions and interactive input come from.
	In *os.File
	// Out receives progress and results; Err receives warnings.
	Out, Err io.Writer
	// Now tells the time (for backups' names); time.Now by default.
	Now func() time.Time

	p paths
}

// Open loads the configuration of the armdev checkout at root from the
// environment and returns its workspace.
func Open(root string) (*Workspace, error) {
	cfg, err := config.Load(root, os.LookupEnv)
	if err != nil {
		return nil, err
	}
	return New(cfg), nil
}

// New returns the workspace for cfg, talking to the process's terminal.
func New(cfg config.Config) *Workspace {
	return &Workspace{Cfg: cfg, In: os.Stdin, Out: os.Stdout, Err: os.Stderr, Now: time.Now, p: paths{cfg.StateDir}}
}

// ArgsFromEnv reads the arguments .just-run passes one variable each
// (ARMDEV_ARGC, ARMDEV_ARG_0, …), so that no quoting is lost on the way.
// A leading "--" is dropped.
func ArgsFromEnv(env config.Env) []string {
	v, _ := env("ARMDEV_ARGC")
	n, _ := strconv.Atoi(v)
	args := make([]string, 0, n)
	for i := range n {
		a, _ := env("ARMDEV_ARG_" + strconv.Itoa(i))
		args = append(args, a)
	}
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	return args
}

// paths names every file in the state directory.
type paths struct{ state string }

func (p paths) lock() string           { return filepath.Join(p.state, "hydra-lock.json") }
func (p paths) downloads() string      { return filepath.Join(p.state, "downloads") }
func (p paths) bases() string          { return filepath.Join(p.state, "bases") }
func (p paths) base(key string) string { return filepath.Join(p.bases(), key+".img") }
func (p paths) disk() string           { return filepath.Join(p.state, "disk.qcow2") }
func (p paths) diskMeta() string       { return filepath.Join(p.state, "disk.json") }
func (p paths) backups() string        { return filepath.Join(p.state, "backups") }
func (p paths) ssh() string            { return filepath.Join(p.state, "ssh") }
func (p paths) knownHosts() string     { return filepath.Join(p.ssh(), "known_hosts") }
func (p paths) sshConfig() string      { return filepath.Join(p.ssh(), "config") }
func (p paths) run() string            { return filepath.Join(p.state, "run") }
func (p paths) pid() string            { return filepath.Join(p.run(), "qemu.pid") }
func (p paths) qmp() string            { return filepath.Join(p.run(), "qmp.sock") }
func (p paths) serial() string         { return filepath.Join(p.run(), "serial.sock") }
func (p paths) serialLog() string      { return filepath.Join(p.state, "logs", "serial.log") }
func (p paths) qemuLog() string        { return filepath.Join(p.state, "logs", "qemu.log") }
func (p paths) provisionLog() string   { return filepath.Join(p.state, "logs", "provision.log") }
func (p paths) runInfo() string        { return filepath.Join(p.run(), "vm.json") }
func (p paths) stamp(name string) string {
	return filepath.Join(p.state, "stamps", name)
}

// DiskMeta describes the working disk: where it came from and what was
// done to it. It is kept next to the disk as disk.json.
type DiskMeta struct {
	// BaseKey names the prepared base image the overlay sits on.
	BaseKey string `json:"base_key"`
	// Base is the base image's path.
	Base string `json:"base"`
	// Release, BuildID and Image say which Hydra build the base came from.
	Release string `json:"release"`
	BuildID int    `json:"build_id"`
	Image   string `json:"image"`
	// Created is when the overlay was made.
	Created time.Time `json:"created"`
	// Provisioned is set once the first boot applied our configuration and
	// the "provisioned" snapshot exists.
	Provisioned   bool      `json:"provisioned"`
	ProvisionedAt time.Time `json:"provisioned_at,omitzero"`
	// AppliedConfig is the digest of share/etc/nixos when it was last applied.
	AppliedConfig string `json:"applied_config,omitempty"`
	// RepinHostKey lets the next SSH contact pin a new host key: set when
	// armdev itself made or reset the disk.
	RepinHostKey bool `json:"repin_host_key,omitempty"`
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("read %s: %w (delete it to start over)", path, err)
	}
	return nil
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return stamp.WriteFileAtomic(path, append(data, '\n'), 0o644)
}

// meta reads disk.json; ok is false when there is no working disk.
func (w *Workspace) meta() (m DiskMeta, ok bool, err error) {
	if err := readJSON(w.p.diskMeta(), &m); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return DiskMeta{}, false, nil
		}
		return DiskMeta{}, false, err
	}
	if _, err := os.Stat(w.p.disk()); err != nil {
		return DiskMeta{}, false, nil
	}
	return m, true, nil
}

func (w *Workspace) saveMeta(m DiskMeta) error {
	return writeJSON(w.p.diskMeta(), m)
}

// isTerminal reports whether f is an interactive terminal.
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	return ok && term.IsTerminal(int(file.Fd()))
}

// confirm asks a yes/no question before a destructive step: ARMDEV_YES=1
// says yes, a terminal is asked, anything else is a no.
func (w *Workspace) confirm(question string) (bool, error) {
	if w.Cfg.Yes {
		return true, nil
	}
	if w.In == nil || !isTerminal(w.In) {
		return false, nil
	}
	fmt.Fprintf(w.Out, "%s [y/N] ", question)
	line, err := bufio.NewReader(w.In).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("read answer: %w", err)
	}
	answer := strings.ToLower(strings.TrimSpace(line))
	return answer == "y" || answer == "yes", nil
}

func (w *Workspace) say(format string, args ...any) {
	fmt.Fprintf(w.Out, format+"\n", args...)
}
