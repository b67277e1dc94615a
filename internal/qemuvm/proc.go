package qemuvm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// proc is what the identity check needs to know about one process.
type proc struct {
	pid  int
	comm string   // the kernel's process name; "" where the OS has no /proc
	argv []string // the command line
	// cwd resolves a relative path on the command line the way the process did;
	// "" when the OS cannot say (then relative paths match nothing).
	cwd string
}

// identify returns "" when p is the guest named name running disk, else why not.
// It is the one identity check: Inspect, FindGuest and Kill all rely on it. The
// disk is compared as a file (os.SameFile), so the spelling of its path (a symlinked
// state folder, say) does not matter; a nil disk (ours does not exist) matches
// nothing.
func identify(p proc, disk os.FileInfo, name string) string {
	if p.comm != "" && p.comm != truncComm(name) {
		return fmt.Sprintf("process %d is %q, not the guest", p.pid, p.comm)
	}
	if guestName(p.argv) != name {
		return fmt.Sprintf("process %d is not a QEMU guest named %s", p.pid, name)
	}
	for _, f := range driveFiles(p.argv) {
		if !filepath.IsAbs(f) {
			if p.cwd == "" {
				continue
			}
			f = filepath.Join(p.cwd, f)
		}
		if fi, err := os.Stat(f); err == nil && disk != nil && os.SameFile(fi, disk) {
			return ""
		}
	}
	return fmt.Sprintf("process %d runs another disk", p.pid)
}

// checkPID identifies process pid (see identify).
func checkPID(pid int, disk os.FileInfo, name string) string {
	if !alive(pid) {
		return fmt.Sprintf("no process %d", pid)
	}
	var p proc
	var err error
	if procfs() {
		p, err = readProc(pid)
	} else {
		p, err = psProc(pid)
	}
	if err != nil {
		return fmt.Sprintf("cannot inspect process %d: %v", pid, err)
	}
	return identify(p, disk, name)
}

// truncComm shortens name as the kernel does for /proc/PID/comm.
func truncComm(name string) string {
	if len(name) > 15 {
		return name[:15]
	}
	return name
}

// guestName returns the process= value of QEMU's last -name option ("" when
// there is none): the name QEMU gives its process.
func guestName(argv []string) string {
	name := ""
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] == "-name" || argv[i] == "--name" {
			name, _ = optValue(argv[i+1], "process")
		}
	}
	return name
}

// driveFiles returns the file= values of QEMU's -drive options.
func driveFiles(argv []string) []string {
	var files []string
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] == "-drive" || argv[i] == "--drive" {
			if f, ok := optValue(argv[i+1], "file"); ok {
				files = append(files, f)
			}
		}
	}
	return files
}

// optValue returns the value of key in a QEMU option string such as
// "if=none,file=/a,,b,format=qcow2", with QEMU's escaping undone (",," is a
// literal comma, as escapeOpt writes it). When key appears more than once the last
// one counts, as in QEMU.
func optValue(opts, key string) (value string, ok bool) {
	var item strings.Builder
	flush := func() {
		if k, v, found := strings.Cut(item.String(), "="); found && k == key {
			value, ok = v, true
		}
		item.Reset()
	}
	for i := 0; i < len(opts); i++ {
		switch {
		case opts[i] == ',' && i+1 < len(opts) && opts[i+1] == ',':
			item.WriteByte(',')
			i++
		case opts[i] == ',':
			flush()
		default:
			item.WriteByte(opts[i])
		}
	}
	flush()
	return value, ok
}

// procfs reports whether this OS has a Linux-style /proc.
func procfs() bool {
	_, err := os.Stat("/proc/self/stat")
	return err == nil
}

// readProc reads process pid from /proc.
func readProc(pid int) (proc, error) {
	dir := "/proc/" + strconv.Itoa(pid)
	comm, err := os.ReadFile(dir + "/comm")
	if err != nil {
		return proc{}, err
	}
	cmdline, err := os.ReadFile(dir + "/cmdline")
	if err != nil {
		return proc{}, err
	}
	argv := strings.Split(string(bytes.TrimSuffix(cmdline, []byte{0})), "\x00")
	return proc{pid: pid, comm: strings.TrimSuffix(string(comm), "\n"), argv: argv, cwd: dir + "/cwd"}, nil
}

// procCandidates lists, from /proc, the processes named name (truncated as the
// kernel does). Processes that end during the scan are skipped.
func procCandidates(name string) ([]proc, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var procs []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		// The name first: reading it is cheap, and most processes stop there.
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err != nil || strings.TrimSuffix(string(comm), "\n") != truncComm(name) {
			continue
		}
		if p, err := readProc(pid); err == nil {
			procs = append(procs, p)
		}
	}
	return procs, nil
}

// psProc reads process pid with ps, for systems without /proc (macOS).
func psProc(pid int) (proc, error) {
	out, err := exec.Command("ps", "-o", "args=", "-p", strconv.Itoa(pid)).Output()
	if err != nil {
		return proc{}, fmt.Errorf("ps -p %d: %w", pid, err)
	}
	return proc{pid: pid, argv: psArgv(strings.TrimSpace(string(out)))}, nil
}

// psCandidates lists every process with ps, for systems without /proc (macOS).
// There the process name is not QEMU's process= value, so it is left empty.
func psCandidates() ([]proc, error) {
	out, err := exec.Command("ps", "-ax", "-o", "pid=,args=").Output()
	if err != nil {
		return nil, fmt.Errorf("ps -ax: %w", err)
	}
	var procs []proc
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		pidStr, args, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if pid, err := strconv.Atoi(pidStr); err == nil {
			procs = append(procs, proc{pid: pid, argv: psArgv(strings.TrimSpace(args))})
		}
	}
	return procs, sc.Err()
}

// psArgv rebuilds an argument list from ps's rendering, in which arguments are
// joined by spaces: a new option starts at each " -", and its value follows the
// first space. A path that contains " -" is cut wrongly, which only makes the
// process look like something other than our guest: identification fails safe.
func psArgv(line string) []string {
	parts := strings.Split(line, " -")
	argv := []string{parts[0]}
	for _, p := range parts[1:] {
		flag, value, ok := strings.Cut(p, " ")
		argv = append(argv, "-"+flag)
		if ok {
			argv = append(argv, value)
		}
	}
	return argv
}

// alive reports whether pid is a process that has not exited (a zombie counts as
// exited once all its threads are gone).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return !os.IsNotExist(err) || !procfs()
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) && (s[i+2] == 'Z' || s[i+2] == 'X') {
		// A zombie leader may still have threads tearing down (and holding its
		// sockets and files); the process is gone once they are.
		tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
		return err == nil && len(tasks) > 1
	}
	return true
}
