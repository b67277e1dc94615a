package disk

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// hostTree writes a small tree like the repository's init/ folder.
func hostTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	write := func(rel, content string, mode os.FileMode) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // umask-proof
			t.Fatal(err)
		}
	}
	write("home/nixos/.profile", "sudo --login\n", 0o644)
	write("root/.profile", "nixos-rebuild switch\n", 0o755)
	write("etc/with space/file name.txt", "spaced \"quoted\" out\n", 0o644)
	write("root/secret/key", "top secret\n", 0o600)
	if err := os.Chmod(filepath.Join(dir, "root/secret"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../home/nixos/.profile", filepath.Join(dir, "root/link to profile")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestTreeFiles(t *testing.T) {
	dir := hostTree(t)
	files, err := TreeFiles(dir, "/")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]File{}
	for _, f := range files {
		got[f.GuestPath] = f
		if f.UID != 0 || f.GID != 0 {
			t.Errorf("%s owned by %d:%d, want root", f.GuestPath, f.UID, f.GID)
		}
	}
	checks := []struct {
		path string
		mode os.FileMode
		dir  bool
		link string
	}{
		{"/home", 0o755, true, ""},
		{"/home/nixos/.profile", 0o644, false, ""},
		{"/root/.profile", 0o755, false, ""},
		{"/root/secret", 0o700, true, ""},
		{"/root/secret/key", 0o600, false, ""},
		{"/etc/with space/file name.txt", 0o644, false, ""},
		{"/root/link to profile", 0o777, false, "../home/nixos/.profile"},
	}
	for _, c := range checks {
		f, ok := got[c.path]
		if !ok {
			t.Errorf("%s missing from %v", c.path, files)
			continue
		}
		if f.Mode != c.mode || f.Dir != c.dir || f.Link != c.link {
			t.Errorf("%s: mode %v dir %v link %q, want %v %v %q", c.path, f.Mode, f.Dir, f.Link, c.mode, c.dir, c.link)
		}
		if !c.dir && c.link == "" && f.Src != filepath.Join(dir, filepath.FromSlash(c.path)) {
			t.Errorf("%s: src %q", c.path, f.Src)
		}
	}
	if len(files) != 11 { // 5 directories, 5 files, 1 link
		t.Errorf("got %d files, want 11: %+v", len(files), files)
	}

	under, err := TreeFiles(dir, "/etc/nixos")
	if err != nil {
		t.Fatal(err)
	}
	if under[0].GuestPath != "/etc/nixos/etc" {
		t.Errorf("first entry under /etc/nixos: %q", under[0].GuestPath)
	}
}

func TestInjectTree(t *testing.T) {
	needTool(t, "debugfs")
	ctx := t.Context()
	img := makeSDImage(t, 96<<20)
	root, err := RootPartition(img)
	if err != nil {
		t.Fatal(err)
	}
	off := root.Start

	files, err := TreeFiles(hostTree(t), "/")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files,
		File{GuestPath: "/home/armdev/.ssh/authorized_keys", Data: []byte("ssh-ed25519 AAAA test\n"), Mode: 0o600, UID: 1000, GID: 100},
		File{GuestPath: "/home/armdev/.ssh", Dir: true, Mode: 0o700, UID: 1000, GID: 100},
		File{GuestPath: "/usr/bin/tool", Data: []byte("#!/bin/sh\n"), Mode: 0o755 | os.ModeSetuid},
	)
	if err := Inject(ctx, img, off, files); err != nil {
		t.Fatal(err)
	}

	wantFiles := []struct {
		path, content string
		mode          os.FileMode
		uid, gid      int
	}{
		{"/home/nixos/.profile", "sudo --login\n", 0o644, 0, 0},
		{"/root/.profile", "nixos-rebuild switch\n", 0o755, 0, 0},
		{"/etc/with space/file name.txt", "spaced \"quoted\" out\n", 0o644, 0, 0},
		{"/root/secret/key", "top secret\n", 0o600, 0, 0},
		{"/home/armdev/.ssh/authorized_keys", "ssh-ed25519 AAAA test\n", 0o600, 1000, 100},
		{"/usr/bin/tool", "#!/bin/sh\n", 0o755 | os.ModeSetuid, 0, 0},
	}
	for _, w := range wantFiles {
		got, err := ReadFile(ctx, img, off, w.path)
		if err != nil {
			t.Errorf("read %s: %v", w.path, err)
		} else if string(got) != w.content {
			t.Errorf("%s holds %q, want %q", w.path, got, w.content)
		}
		fi, err := Stat(ctx, img, off, w.path)
		if err != nil {
			t.Errorf("stat %s: %v", w.path, err)
			continue
		}
		if fi.Mode != w.mode || fi.UID != w.uid || fi.GID != w.gid || fi.Size != int64(len(w.content)) {
			t.Errorf("%s: %+v, want mode %v owner %d:%d size %d", w.path, fi, w.mode, w.uid, w.gid, len(w.content))
		}
	}
	wantDirs := map[string]FileInfo{
		"/home":                 {Mode: os.ModeDir | 0o755},
		"/etc/with space":       {Mode: os.ModeDir | 0o755},
		"/root/secret":          {Mode: os.ModeDir | 0o700},
		"/home/armdev":          {Mode: os.ModeDir | 0o755},
		"/home/armdev/.ssh":     {Mode: os.ModeDir | 0o700, UID: 1000, GID: 100},
		"/usr/bin":              {Mode: os.ModeDir | 0o755},
		"/root/link to profile": {Mode: os.ModeSymlink | 0o777},
	}
	for p, w := range wantDirs {
		fi, err := Stat(ctx, img, off, p)
		if err != nil {
			t.Errorf("stat %s: %v", p, err)
			continue
		}
		if fi.Mode != w.Mode || fi.UID != w.UID || fi.GID != w.GID {
			t.Errorf("%s: %+v, want %+v", p, fi, w)
		}
	}

	// Independent of our parsing: debugfs's own cat and e2fsck.
	debugfs := needTool(t, "debugfs")
	out, err := exec.Command(debugfs, "-R", `cat "/etc/with space/file name.txt"`, fmt.Sprintf("%s?offset=%d", img, off)).Output()
	if err != nil || string(out) != "spaced \"quoted\" out\n" {
		t.Errorf("debugfs cat: %q, %v", out, err)
	}
	out, err = exec.Command(debugfs, "-R", `stat "/root/link to profile"`, fmt.Sprintf("%s?offset=%d", img, off)).Output()
	if err != nil || !strings.Contains(string(out), `Fast link dest: "../home/nixos/.profile"`) {
		t.Errorf("symlink target: %s, %v", out, err)
	}
	fsck(t, img, off)

	// Missing paths are fs.ErrNotExist.
	if _, err := Stat(ctx, img, off, "/nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stat of a missing path: %v", err)
	}
	if _, err := ReadFile(ctx, img, off, "/nope/x"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("read of a missing path: %v", err)
	}
}

func TestInjectOverwrite(t *testing.T) {
	needTool(t, "debugfs")
	ctx := t.Context()
	img := makeSDImage(t, 96<<20)
	const off = nixosRootOffset
	first := []File{{GuestPath: "/etc/nixos/configuration.nix", Data: []byte("{ old }\n"), Mode: 0o600, UID: 5}}
	if err := Inject(ctx, img, off, first); err != nil {
		t.Fatal(err)
	}
	// A second run replaces the file, keeps the existing parents as they
	// are, and an explicit directory entry changes an existing directory.
	second := []File{
		{GuestPath: "/etc/nixos/configuration.nix", Data: []byte("{ new, longer content }\n"), Mode: 0o644},
		{GuestPath: "/etc", Dir: true, Mode: 0o751},
	}
	if err := Inject(ctx, img, off, second); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFile(ctx, img, off, "/etc/nixos/configuration.nix")
	if err != nil || string(got) != "{ new, longer content }\n" {
		t.Fatalf("after overwrite: %q, %v", got, err)
	}
	fi, err := Stat(ctx, img, off, "/etc/nixos/configuration.nix")
	if err != nil || fi.Mode != 0o644 || fi.UID != 0 {
		t.Errorf("after overwrite: %+v, %v", fi, err)
	}
	if fi, err := Stat(ctx, img, off, "/etc"); err != nil || fi.Mode != os.ModeDir|0o751 {
		t.Errorf("/etc: %+v, %v", fi, err)
	}
	fsck(t, img, off)
}

func TestInjectFailsLoudly(t *testing.T) {
	needTool(t, "debugfs")
	ctx := t.Context()
	img := makeSDImage(t, 56<<20) // an 18 MiB filesystem
	const off = nixosRootOffset

	big := filepath.Join(t.TempDir(), "big")
	data := make([]byte, 24<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(big, data, 0o644); err != nil {
		t.Fatal(err)
	}
	err := Inject(ctx, img, off, []File{{GuestPath: "/big", Src: big}})
	if err == nil || !strings.Contains(err.Error(), "allocate") {
		t.Errorf("file larger than the filesystem: got %v", err)
	}

	// The failed write leaves the filesystem full: go on with a new one.
	img = makeSDImage(t, 56<<20)
	if err := Inject(ctx, img, off, []File{{GuestPath: "/f", Data: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	cases := map[string][]File{
		"file as parent":   {{GuestPath: "/f/g", Data: []byte("y")}},
		"file over dir":    {{GuestPath: "/lost+found", Data: []byte("y")}},
		"relative path":    {{GuestPath: "etc/x"}},
		"unclean path":     {{GuestPath: "/etc/../x"}},
		"newline in path":  {{GuestPath: "/a\nb"}},
		"missing source":   {{GuestPath: "/x", Src: filepath.Join(t.TempDir(), "nope")}},
		"not a filesystem": nil,
	}
	for name, files := range cases {
		o := int64(off)
		if name == "not a filesystem" {
			o, files = 512, []File{{GuestPath: "/x"}}
		}
		if err := Inject(ctx, img, o, files); err == nil {
			t.Errorf("%s: no error", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if err := Inject(ctx, img+"?x", off, []File{{GuestPath: "/x"}}); err == nil || !strings.Contains(err.Error(), "'?'") {
		t.Errorf("image path with '?': %v", err)
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/a":        `"/a"`,
		"/a b":      `"/a b"`,
		`/say "hi"`: `"/say ""hi"""`,
	} {
		if got, err := quote(in); err != nil || got != want {
			t.Errorf("quote(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// fsck fails the test unless e2fsck finds the filesystem clean.
func fsck(t *testing.T, img string, off int64) {
	t.Helper()
	e2fsck := needTool(t, "e2fsck")
	out, err := exec.Command(e2fsck, "-fn", fmt.Sprintf("%s?offset=%d", img, off)).CombinedOutput()
	if err != nil {
		t.Errorf("e2fsck: %v\n%s", err, out)
	}
}
