package disk

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// File is one entry to create in the guest's filesystem with Inject.
type File struct {
	// GuestPath is the absolute path inside the filesystem.
	GuestPath string
	// Src is the host file whose content is copied; if empty, Data is used.
	Src string
	// Data is the content when Src is empty.
	Data []byte
	// Link, when not empty, makes the entry a symbolic link to Link.
	Link string
	// Mode holds the permission bits, with os.ModeSetuid, os.ModeSetgid and
	// os.ModeSticky honoured; zero means 0644 for files and 0755 for
	// directories.
	Mode os.FileMode
	// UID and GID own the entry.
	UID, GID int
	// Dir makes the entry a directory; Src, Data and Link are then ignored.
	Dir bool
}

// FileInfo describes an inode of the guest's filesystem.
type FileInfo struct {
	// Mode has the type bits (os.ModeDir, os.ModeSymlink, ...), the
	// permission bits and the setuid, setgid and sticky bits.
	Mode os.FileMode
	// UID and GID own the inode.
	UID, GID int
	// Size is the size in bytes.
	Size int64
}

// fsPath names an ext4 filesystem at a byte offset of an image for
// e2fsprogs ("image?offset=N").
func fsPath(image string, offset int64) (string, error) {
	if strings.Contains(image, "?") {
		return "", fmt.Errorf("image path %q contains '?', which e2fsprogs cannot open: move the image", image)
	}
	if offset < 0 {
		return "", fmt.Errorf("negative filesystem offset %d", offset)
	}
	return fmt.Sprintf("%s?offset=%d", image, offset), nil
}

// quote quotes s for debugfs's command parser, which groups text inside
// double quotes and reads "" inside them as one ".
func quote(s string) (string, error) {
	if strings.ContainsAny(s, "\n\r\x00") {
		return "", fmt.Errorf("path %q has a newline or NUL, which debugfs cannot take", s)
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`, nil
}

// debugfsOut is what one debugfs run printed.
type debugfsOut struct {
	stdout []byte
	// errs are the stderr lines that are not the version banner.
	errs []string
}

// runDebugfs runs debugfs with the commands in script on the filesystem at
// offset in image; write opens it read-write.
func runDebugfs(ctx context.Context, image string, offset int64, write bool, script []string) (debugfsOut, error) {
	var out debugfsOut
	bin, err := LookTool("debugfs")
	if err != nil {
		return out, err
	}
	target, err := fsPath(image, offset)
	if err != nil {
		return out, err
	}
	if _, err := os.Stat(image); err != nil {
		return out, err
	}
	cmdFile, err := os.CreateTemp("", "armdev-debugfs-*.cmd")
	if err != nil {
		return out, err
	}
	defer func() { _ = os.Remove(cmdFile.Name()) }()
	if _, err := cmdFile.WriteString(strings.Join(script, "\n") + "\n"); err != nil {
		_ = cmdFile.Close()
		return out, err
	}
	if err := cmdFile.Close(); err != nil {
		return out, err
	}

	args := []string{"-f", cmdFile.Name()}
	if write {
		args = append([]string{"-w"}, args...)
	}
	args = append(args, target)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Keep debugfs from paging long output.
	cmd.Env = append(os.Environ(), "DEBUGFS_PAGER=__none__", "PAGER=__none__")
	runErr := cmd.Run()
	out.stdout = stdout.Bytes()
	for _, line := range strings.Split(stderr.String(), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "debugfs ") && strings.Contains(line, "(") && !strings.Contains(line, ":") {
			continue // "debugfs 1.47.0 (5-Feb-2023)"
		}
		out.errs = append(out.errs, line)
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return out, ctxErr
	}
	if runErr != nil {
		if len(out.errs) > 0 {
			return out, fmt.Errorf("debugfs: %w: %s", runErr, out.errs[0])
		}
		return out, fmt.Errorf("debugfs: %w", runErr)
	}
	return out, nil
}

const notFound = "File not found by ext2_lookup"

// statAll stats paths in one debugfs run; missing paths are absent from the
// result. Any other complaint of debugfs is an error.
func statAll(ctx context.Context, image string, offset int64, paths []string) (map[string]FileInfo, error) {
	script := make([]string, 0, len(paths))
	for _, p := range paths {
		q, err := quote(p)
		if err != nil {
			return nil, err
		}
		script = append(script, "stat "+q)
	}
	out, err := runDebugfs(ctx, image, offset, false, script)
	if err != nil {
		return nil, err
	}
	for _, e := range out.errs {
		if !strings.HasSuffix(e, notFound) {
			return nil, fmt.Errorf("debugfs: %s", e)
		}
	}
	// Each command is echoed as "debugfs: stat ..." on stdout, followed by
	// the inode's description when the path exists.
	res := make(map[string]FileInfo, len(paths))
	cmd := -1
	sc := bufio.NewScanner(bytes.NewReader(out.stdout))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "debugfs: ") {
			cmd++
			continue
		}
		if cmd < 0 || cmd >= len(paths) {
			continue
		}
		p := paths[cmd]
		switch fi, seen := res[p]; {
		case strings.HasPrefix(line, "Inode: ") && !seen:
			fi, err := parseInodeLine(line)
			if err != nil {
				return nil, fmt.Errorf("stat %s: %w", p, err)
			}
			res[p] = fi
		case strings.HasPrefix(line, "User: ") && seen:
			if err := parseUserLine(line, &fi); err != nil {
				return nil, fmt.Errorf("stat %s: %w", p, err)
			}
			res[p] = fi
		}
	}
	if cmd+1 != len(paths) {
		return nil, fmt.Errorf("debugfs ran %d of %d stat commands", cmd+1, len(paths))
	}
	return res, nil
}

// parseInodeLine reads "Inode: 14   Type: regular    Mode:  0600   Flags: 0x80000".
func parseInodeLine(line string) (FileInfo, error) {
	var fi FileInfo
	ti := strings.Index(line, "Type: ")
	mi := strings.Index(line, "Mode: ")
	if ti < 0 || mi < ti {
		return fi, fmt.Errorf("unexpected debugfs output %q", line)
	}
	switch typ := strings.TrimSpace(line[ti+len("Type: ") : mi]); typ {
	case "regular":
	case "directory":
		fi.Mode = os.ModeDir
	case "symlink":
		fi.Mode = os.ModeSymlink
	case "FIFO":
		fi.Mode = os.ModeNamedPipe
	case "socket":
		fi.Mode = os.ModeSocket
	case "character special":
		fi.Mode = os.ModeDevice | os.ModeCharDevice
	case "block special":
		fi.Mode = os.ModeDevice
	default:
		return fi, fmt.Errorf("unknown inode type %q", typ)
	}
	fields := strings.Fields(line[mi+len("Mode: "):])
	if len(fields) == 0 {
		return fi, fmt.Errorf("unexpected debugfs output %q", line)
	}
	m, err := strconv.ParseUint(fields[0], 8, 32)
	if err != nil {
		return fi, fmt.Errorf("unexpected mode in %q: %w", line, err)
	}
	fi.Mode |= fromUnixPerm(uint32(m))
	return fi, nil
}

// parseUserLine reads "User:     5   Group:     0   Project:     0   Size: 6".
func parseUserLine(line string, fi *FileInfo) error {
	f := strings.Fields(line)
	for i := 0; i+1 < len(f); i += 2 {
		n, err := strconv.ParseInt(f[i+1], 10, 64)
		if err != nil {
			return fmt.Errorf("unexpected debugfs output %q", line)
		}
		switch f[i] {
		case "User:":
			fi.UID = int(n)
		case "Group:":
			fi.GID = int(n)
		case "Size:":
			fi.Size = n
		}
	}
	return nil
}

// unixPerm turns the permission and special bits of m into Unix mode bits.
func unixPerm(m os.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&os.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

// fromUnixPerm is the inverse of unixPerm.
func fromUnixPerm(u uint32) os.FileMode {
	m := os.FileMode(u & 0o777)
	if u&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if u&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if u&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m
}

// Stat describes guestPath in the ext4 filesystem at offset bytes into
// image. A missing path gives an error that matches fs.ErrNotExist.
func Stat(ctx context.Context, image string, offset int64, guestPath string) (FileInfo, error) {
	res, err := statAll(ctx, image, offset, []string{guestPath})
	if err != nil {
		return FileInfo{}, fmt.Errorf("stat %s in %s: %w", guestPath, image, err)
	}
	fi, ok := res[guestPath]
	if !ok {
		return FileInfo{}, fmt.Errorf("stat %s in %s: %w", guestPath, image, fs.ErrNotExist)
	}
	return fi, nil
}

// ReadFile returns the content of guestPath in the ext4 filesystem at
// offset bytes into image. A missing path gives an error that matches
// fs.ErrNotExist.
func ReadFile(ctx context.Context, image string, offset int64, guestPath string) ([]byte, error) {
	fi, err := Stat(ctx, image, offset, guestPath)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", guestPath, err)
	}
	if !fi.Mode.IsRegular() {
		return nil, fmt.Errorf("read %s in %s: not a regular file (%v)", guestPath, image, fi.Mode)
	}
	q, err := quote(guestPath)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", guestPath, err)
	}
	dir, err := os.MkdirTemp("", "armdev-read-*")
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", guestPath, err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	// dump writes the bytes to a host file: exact, unlike stdout, which
	// also carries the echo of the command.
	host := filepath.Join(dir, "out")
	hq, err := quote(host)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", guestPath, err)
	}
	out, err := runDebugfs(ctx, image, offset, false, []string{"dump " + q + " " + hq})
	if err == nil && len(out.errs) > 0 {
		err = errors.New(strings.Join(out.errs, "; "))
	}
	if err != nil {
		return nil, fmt.Errorf("read %s in %s: %w", guestPath, image, err)
	}
	data, err := os.ReadFile(host)
	if err != nil {
		return nil, fmt.Errorf("read %s in %s: %w", guestPath, image, err)
	}
	return data, nil
}

// entry is a planned inode of Inject.
type entry struct {
	File
	implicit bool // a parent directory nobody asked for
	depth    int
	order    int
}

// Inject creates files in the ext4 filesystem at offset bytes into image,
// without root: parent directories are created as needed (0755, root),
// existing files and links are replaced, and every listed entry gets its
// mode and owner. It runs debugfs twice: once to look at what exists and
// once, read-write, with all the changes; any complaint of debugfs fails it.
// It is not atomic: after an error the filesystem may hold part of the
// changes (even a partly written file), so start again from a fresh image.
func Inject(ctx context.Context, image string, offset int64, files []File) error {
	if len(files) == 0 {
		return nil
	}
	plan, err := planInject(files)
	if err != nil {
		return fmt.Errorf("inject into %s: %w", image, err)
	}
	paths := make([]string, len(plan))
	for i, e := range plan {
		paths[i] = e.GuestPath
	}
	existing, err := statAll(ctx, image, offset, paths)
	if err != nil {
		return fmt.Errorf("inject into %s: %w", image, err)
	}

	dataDir, err := os.MkdirTemp("", "armdev-inject-*")
	if err != nil {
		return fmt.Errorf("inject into %s: %w", image, err)
	}
	defer func() { _ = os.RemoveAll(dataDir) }()

	script, err := injectScript(plan, existing, dataDir)
	if err != nil {
		return fmt.Errorf("inject into %s: %w", image, err)
	}
	out, err := runDebugfs(ctx, image, offset, true, script)
	if err == nil && len(out.errs) > 0 {
		err = fmt.Errorf("debugfs: %s", strings.Join(out.errs, "; "))
	}
	if err != nil {
		return fmt.Errorf("inject into %s: %w", image, err)
	}
	return nil
}

// planInject checks files and adds their missing parent directories,
// parents first. A later entry for the same path wins.
func planInject(files []File) ([]entry, error) {
	byPath := map[string]*entry{}
	add := func(e entry) {
		if old, ok := byPath[e.GuestPath]; ok {
			if e.implicit {
				return
			}
			e.order = old.order
		} else {
			e.order = len(byPath)
		}
		byPath[e.GuestPath] = &e
	}
	for _, f := range files {
		p := f.GuestPath
		if !path.IsAbs(p) || path.Clean(p) != p {
			return nil, fmt.Errorf("guest path %q must be absolute and clean", p)
		}
		if p == "/" {
			return nil, errors.New("guest path / cannot be injected")
		}
		if _, err := quote(p); err != nil {
			return nil, err
		}
		if !f.Dir && f.Link == "" && f.Src == "" && f.Data == nil {
			f.Data = []byte{}
		}
		if f.Src != "" {
			if _, err := quote(f.Src); err != nil {
				return nil, err
			}
		}
		if f.Link != "" {
			if _, err := quote(f.Link); err != nil {
				return nil, err
			}
		}
		for dir := path.Dir(p); dir != "/"; dir = path.Dir(dir) {
			add(entry{File: File{GuestPath: dir, Dir: true}, implicit: true})
		}
		add(entry{File: f})
	}
	plan := make([]entry, 0, len(byPath))
	for _, e := range byPath {
		e.depth = strings.Count(e.GuestPath, "/")
		plan = append(plan, *e)
	}
	sort.Slice(plan, func(i, j int) bool {
		if plan[i].depth != plan[j].depth {
			return plan[i].depth < plan[j].depth
		}
		return plan[i].order < plan[j].order
	})
	return plan, nil
}

// injectScript writes the debugfs commands that carry out plan on a
// filesystem where existing is what exists; Data contents go to dataDir.
func injectScript(plan []entry, existing map[string]FileInfo, dataDir string) ([]string, error) {
	var script []string
	for i, e := range plan {
		q, _ := quote(e.GuestPath) // checked by planInject
		old, exists := existing[e.GuestPath]
		if exists && old.Mode.IsDir() != e.Dir {
			if e.Dir {
				return nil, fmt.Errorf("%s exists in the image and is not a directory", e.GuestPath)
			}
			return nil, fmt.Errorf("%s exists in the image as a directory: cannot replace it with a file", e.GuestPath)
		}
		var typ uint32
		switch {
		case e.Dir:
			typ = 0o040000
			if e.implicit && exists {
				continue
			}
			if !exists {
				script = append(script, "mkdir "+q)
			}
		case e.Link != "":
			typ = 0o120000
			if exists {
				script = append(script, "rm "+q)
			}
			lq, _ := quote(e.Link)
			script = append(script, "symlink "+q+" "+lq)
		default:
			typ = 0o100000
			if exists {
				script = append(script, "rm "+q)
			}
			src := e.Src
			if src == "" {
				src = filepath.Join(dataDir, strconv.Itoa(i))
				if err := os.WriteFile(src, e.Data, 0o600); err != nil {
					return nil, err
				}
			} else if st, err := os.Stat(src); err != nil {
				return nil, err
			} else if !st.Mode().IsRegular() {
				return nil, fmt.Errorf("%s is not a regular file", src)
			}
			sq, err := quote(src)
			if err != nil {
				return nil, err
			}
			script = append(script, "write "+sq+" "+q)
		}
		perm := unixPerm(e.Mode)
		switch {
		case e.Link != "" && !e.Dir:
			perm = 0o777
		case e.Mode == 0 && e.Dir:
			perm = 0o755
		case e.Mode == 0:
			perm = 0o644
		}
		script = append(script,
			fmt.Sprintf("sif %s mode 0%o", q, typ|perm),
			fmt.Sprintf("sif %s uid %d", q, e.UID),
			fmt.Sprintf("sif %s gid %d", q, e.GID),
		)
	}
	return script, nil
}

// TreeFiles lists the directories, regular files and symbolic links under
// the host directory dir as Files placed under guestRoot, keeping their
// permission bits and owned by root (uid 0, gid 0). dir itself is not
// listed: Inject creates guestRoot if missing.
func TreeFiles(dir, guestRoot string) ([]File, error) {
	if !path.IsAbs(guestRoot) {
		return nil, fmt.Errorf("guest root %q must be absolute", guestRoot)
	}
	var files []File
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		f := File{GuestPath: path.Join(guestRoot, filepath.ToSlash(rel)), Mode: info.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky)}
		switch {
		case d.IsDir():
			f.Dir = true
		case info.Mode().IsRegular():
			f.Src = p
		case info.Mode()&os.ModeSymlink != 0:
			if f.Link, err = os.Readlink(p); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s is neither a file, a directory nor a symbolic link", p)
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	return files, nil
}
