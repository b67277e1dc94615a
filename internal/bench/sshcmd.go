package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/rsonpath/armdev/internal/harness"
)

// fixtureShellNix is the stand-in guest's fixture project's shell.nix,
// relative to the armdev checkout: a dev shell whose tool exists only
// inside it, evaluated by the stand-in's nix at a real cost per evaluation.
const fixtureShellNix = "internal/testguest/guest/nixpkgs-fixture/project/shell.nix"

// standinLog is the stand-in guest's log of its nix calls; each evaluation
// of a dev shell adds a line with evaluationMark.
const (
	standinLog     = "/var/log/armdev-standin.log"
	evaluationMark = " cmd=evaluation "
)

// coldCommands is how many commands run from a cold dev-shell cache for
// dev_shell_evaluations_per_10_commands.
const coldCommands = 10

// sshRuns is how many timed pairs (ours, OpenSSH) the warm figures take.
const sshRuns = 15

// targets runs the compiled armdev targets binary in a harness's
// workspace, as the justfile's .just-run does.
type targets struct {
	h   *harness.Harness
	bin string
}

// run runs one target with extra settings (NAME=value) and fails unless it
// exits 0.
func (t targets) run(ctx context.Context, target string, extra ...string) (harness.Result, error) {
	t.h.Extra = extra
	defer func() { t.h.Extra = nil }()
	r := t.h.Command(ctx, nil, t.bin, target)
	if r.Code != 0 {
		return r, fmt.Errorf("%s: %s", target, r)
	}
	return r, nil
}

// ssh runs `arm-dev-ssh COMMAND` with extra settings, the command passed as
// .just-run passes arguments: one variable each.
func (t targets) ssh(ctx context.Context, command string, extra ...string) (harness.Result, error) {
	return t.run(ctx, "ssh", append([]string{"ARMDEV_ARGC=1", "ARMDEV_ARG_0=" + command}, extra...)...)
}

// openSSH runs the system's ssh with the workspace's generated config.
func (t targets) openSSH(ctx context.Context, command string) (harness.Result, error) {
	r := t.h.Command(ctx, nil, "ssh", "-F", t.h.Layout().SSHConfig(), "armdev", command)
	if r.Code != 0 {
		return r, fmt.Errorf("ssh -F: %s", r)
	}
	return r, nil
}

// evaluations counts the dev-shell evaluations in the stand-in's log, read
// with OpenSSH so that reading it cannot evaluate anything.
func (t targets) evaluations(ctx context.Context) (int, error) {
	r, err := t.openSSH(ctx, "cat "+standinLog)
	if err != nil {
		return 0, fmt.Errorf("read the stand-in's log: %w", err)
	}
	return strings.Count(r.Stdout, evaluationMark), nil
}

// sshFigures measures the dev-shell figures in a guest that is provisioned
// and stopped, with a cold dev-shell cache; it starts the guest and kills it
// again. The fixture's shell.nix goes into the share first, so every
// `arm-dev-ssh` runs in its dev shell.
func sshFigures(ctx context.Context, out io.Writer, t targets, root string) (err error) {
	data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(fixtureShellNix)))
	if err != nil {
		return fmt.Errorf("read the fixture's shell.nix: %w", err)
	}
	if err := os.WriteFile(filepath.Join(t.h.Share, "shell.nix"), data, 0o644); err != nil {
		return fmt.Errorf("copy the fixture's shell.nix into the share: %w", err)
	}
	if _, err := t.run(ctx, "start"); err != nil {
		return err
	}
	defer func() {
		if _, kerr := t.run(ctx, "kill"); err == nil {
			err = kerr
		}
	}()
	if _, err := t.run(ctx, "sshconfig"); err != nil {
		return err
	}

	// Cold: ten commands, the first of which evaluates the dev shell.
	before, err := t.evaluations(ctx)
	if err != nil {
		return err
	}
	var cold time.Duration
	for i := range coldCommands {
		r, err := t.ssh(ctx, "true")
		if err != nil {
			return err
		}
		if i == 0 {
			cold = r.Took
		}
	}
	after, err := t.evaluations(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "dev_shell_evaluations_per_%d_commands: %d\n", coldCommands, after-before)
	logf(t.h.Log, "the first (evaluating) command took %.2f s", cold.Seconds())

	// Warm: the runs interleaved, so that each series sees the same load
	// (the machine is shared). One untimed round first loads the programs
	// into the page cache. The medians count: a stray burst of load from
	// elsewhere moves a single run, not the middle one, and the best run
	// would reward luck on the emulated guest's side. The third series is
	// no figure, only a log line: the gap between it and the first is what
	// the dev shell costs each command.
	series := []struct {
		name  string
		run   func() (harness.Result, error)
		times []time.Duration
	}{
		{name: "arm-dev-ssh true", run: func() (harness.Result, error) { return t.ssh(ctx, "true") }},
		{name: "ssh -F … armdev true", run: func() (harness.Result, error) { return t.openSSH(ctx, "true") }},
		{name: "arm-dev-ssh true without the dev shell", run: func() (harness.Result, error) {
			return t.ssh(ctx, "true", "ARMDEV_NIX_SHELL=0")
		}},
	}
	for i := range sshRuns + 1 {
		for j := range series {
			r, err := series[j].run()
			if err != nil {
				return err
			}
			if r.Stderr != "" {
				return fmt.Errorf("a warm %s wrote to stderr (evaluated the dev shell again?): %s", series[j].name, r)
			}
			if i > 0 {
				series[j].times = append(series[j].times, r.Took)
			}
		}
	}
	for _, s := range series {
		logf(t.h.Log, "%s: median %.3f s, best %.3f s of %d", s.name, median(s.times).Seconds(), minOf(s.times).Seconds(), len(s.times))
	}
	ours, openssh := median(series[0].times), median(series[1].times)
	fmt.Fprintf(out, "ssh_cmd_seconds: %.3f\n", ours.Seconds())
	fmt.Fprintf(out, "ssh_cmd_openssh_seconds: %.3f\n", openssh.Seconds())
	fmt.Fprintf(out, "ssh_cmd_vs_openssh_ratio: %.2f\n", ours.Seconds()/openssh.Seconds())
	return nil
}

// median is the middle of ds (the mean of the two middle ones for an even
// count); ds is not changed.
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// logf writes one progress line to w, which may be nil.
func logf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, "bench: "+format+"\n", args...)
	}
}
