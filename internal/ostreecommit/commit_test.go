package ostreecommit

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// requireOstreeRoot skips unless the test can do what the comparison
// needs: root (chown, security.* xattrs, bare repositories) and the host
// ostree CLI as the reference implementation.
func requireOstreeRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: bare ostree repositories and the test trees need chown and security.* xattrs")
	}
	if _, err := exec.LookPath("ostree"); err != nil {
		t.Skip("needs the ostree CLI as the reference implementation (apt install ostree)")
	}
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newRepo creates a sysroot-style bare repository, as bootlace's targets
// have, and returns its path.
func newRepo(t testing.TB, sysroot string) string {
	t.Helper()
	if err := os.MkdirAll(sysroot, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "ostree", "admin", "init-fs", "--modern", sysroot)
	return filepath.Join(sysroot, "ostree", "repo")
}

// ostreeCommit commits with the host ostree and the flags bootlace uses.
func ostreeCommit(t testing.TB, repo, tree string, o Options) string {
	t.Helper()
	args := []string{"--repo=" + repo, "commit", "--branch=" + o.Branch, "--tree=dir=" + tree,
		"--consume", "--no-bindings", "--fsync=false", "--subject=" + o.Subject}
	if o.Body != "" {
		args = append(args, "--body="+o.Body)
	}
	for _, kv := range o.Metadata {
		args = append(args, "--add-metadata-string="+kv.Key+"="+kv.Value)
	}
	args = append(args, "--timestamp="+o.Timestamp.UTC().Format(time.RFC3339))
	return strings.TrimSpace(run(t, "ostree", args...))
}

// builder writes test trees; every helper fails the test on error.
type builder struct {
	t    testing.TB
	root string
}

func (b builder) p(rel string) string { return filepath.Join(b.root, rel) }

func (b builder) dir(rel string, mode os.FileMode, uid, gid int) {
	b.t.Helper()
	if err := os.MkdirAll(b.p(rel), 0o755); err != nil {
		b.t.Fatal(err)
	}
	b.own(rel, mode, uid, gid)
}

func (b builder) file(rel string, data []byte, mode os.FileMode, uid, gid int) {
	b.t.Helper()
	if err := os.MkdirAll(filepath.Dir(b.p(rel)), 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(b.p(rel), data, 0o600); err != nil {
		b.t.Fatal(err)
	}
	b.own(rel, mode, uid, gid)
}

// own sets owner first and mode second: chown clears setuid/setgid.
func (b builder) own(rel string, mode os.FileMode, uid, gid int) {
	b.t.Helper()
	if err := os.Lchown(b.p(rel), uid, gid); err != nil {
		b.t.Fatal(err)
	}
	m := uint32(mode.Perm())
	if mode&os.ModeSetuid != 0 {
		m |= unix.S_ISUID
	}
	if mode&os.ModeSetgid != 0 {
		m |= unix.S_ISGID
	}
	if mode&os.ModeSticky != 0 {
		m |= unix.S_ISVTX
	}
	if err := unix.Chmod(b.p(rel), m); err != nil {
		b.t.Fatal(err)
	}
}

func (b builder) symlink(rel, target string, uid, gid int) {
	b.t.Helper()
	if err := os.MkdirAll(filepath.Dir(b.p(rel)), 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.Symlink(target, b.p(rel)); err != nil {
		b.t.Fatal(err)
	}
	if err := os.Lchown(b.p(rel), uid, gid); err != nil {
		b.t.Fatal(err)
	}
}

func (b builder) link(existing, rel string) {
	b.t.Helper()
	if err := os.MkdirAll(filepath.Dir(b.p(rel)), 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.Link(b.p(existing), b.p(rel)); err != nil {
		b.t.Fatal(err)
	}
}

func (b builder) xattr(rel, name string, value []byte) {
	b.t.Helper()
	if err := unix.Lsetxattr(b.p(rel), name, value, 0); err != nil {
		b.t.Fatalf("setting %s on %s: %v", name, rel, err)
	}
}

// pseudo returns deterministic bytes so that every build of a tree has
// the same content.
func pseudo(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	out := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(out[i:], r.Uint64())
	}
	for i := n &^ 7; i < n; i++ {
		out[i] = byte(r.Uint32())
	}
	return out
}

// capability is a valid VFS_CAP_REVISION_2 security.capability value
// (cap_net_raw, effective), as setcap writes it.
func capability() []byte {
	v := make([]byte, 20)
	binary.LittleEndian.PutUint32(v[0:], 0x02000001)
	binary.LittleEndian.PutUint32(v[4:], 1<<13)
	return v
}

var treeCases = []struct {
	name  string
	build func(b builder)
}{
	{"empty root", func(b builder) {}},
	{"regular files", func(b builder) {
		b.file("empty", nil, 0o644, 0, 0)
		b.file("small", []byte("conf=1\n"), 0o644, 0, 0)
		b.file("usr/bin/tool", pseudo(1, 4096), 0o755, 0, 0)
		b.file("usr/lib/big.so", pseudo(2, 5<<20+13), 0o644, 0, 0)
		b.file("usr/share/doc/readme", pseudo(3, 1000), 0o444, 0, 0)
		b.dir("var/empty", 0o755, 0, 0)
	}},
	{"modes and owners", func(b builder) {
		b.file("usr/bin/su", pseudo(4, 300), 0o755|os.ModeSetuid, 0, 0)
		b.file("usr/bin/wall", pseudo(5, 300), 0o755|os.ModeSetgid, 0, 5)
		b.file("usr/bin/suid-user", pseudo(6, 30), 0o4750|os.ModeSetuid, 1000, 1001)
		b.dir("tmp", 0o777|os.ModeSticky, 0, 0)
		b.dir("home/user", 0o700, 1000, 1000)
		b.file("home/user/.profile", []byte("x"), 0o600, 1000, 1000)
		b.file("nobody-owned", []byte("y"), 0o640, 65534, 65534)
		b.file("no-perms", []byte("z"), 0o000, 0, 0)
		b.dir("srv/group-shared", 0o2775|os.ModeSetgid, 0, 100)
		b.own(".", 0o750, 0, 0)
	}},
	{"symlinks", func(b builder) {
		b.file("usr/bin/real", []byte("#!/bin/sh\n"), 0o755, 0, 0)
		b.symlink("bin", "usr/bin", 0, 0)
		b.symlink("usr/bin/rel", "real", 0, 0)
		b.symlink("abs", "/usr/bin/real", 0, 0)
		b.symlink("dangling", "/does/not/exist", 0, 0)
		b.symlink("user-link", "whatever", 1000, 1000)
		b.symlink("usr/lib/dir-link", "../bin", 0, 0)
	}},
	{"hardlinks and duplicates", func(b builder) {
		b.file("usr/bin/git", pseudo(7, 70000), 0o755, 0, 0)
		b.link("usr/bin/git", "usr/libexec/git-core/git")
		b.link("usr/bin/git", "usr/libexec/git-core/git-add")
		b.file("a/one", []byte("same"), 0o644, 0, 0)
		b.file("b/two", []byte("same"), 0o644, 0, 0)
		b.file("c/three", []byte("same"), 0o600, 0, 0)
		b.file("d/e1", nil, 0o644, 0, 0)
		b.file("d/e2", nil, 0o644, 0, 0)
		b.link("d/e1", "d/e3")
	}},
	{"xattrs", func(b builder) {
		b.file("usr/bin/ping", pseudo(8, 500), 0o755, 0, 0)
		b.xattr("usr/bin/ping", "security.capability", capability())
		b.file("f", []byte("x"), 0o644, 0, 0)
		b.xattr("f", "user.z", []byte("last"))
		b.xattr("f", "user.a", []byte("first"))
		b.xattr("f", "user.bin", []byte{0, 1, 2, 0, 255})
		b.xattr("f", "user.empty", nil)
		b.xattr("f", "trusted.t", []byte("trusted"))
		b.xattr("f", "user.big", bytes.Repeat([]byte("v"), 3000))
		b.dir("d", 0o755, 0, 0)
		b.xattr("d", "user.dir", []byte("dirval"))
		b.xattr(".", "user.root", []byte("rootval"))
		b.file("d/same-content", []byte("x"), 0o644, 0, 0) // same bytes as f, other xattrs
		b.xattr("d", "security.test", []byte("sec\x00"))
		b.symlink("link-with-xattr", "f", 0, 0)
		b.xattr("link-with-xattr", "trusted.overlay.test", []byte("y"))
		b.file("empty-with-xattr", nil, 0o644, 0, 0)
		b.xattr("empty-with-xattr", "user.only", []byte("1"))
	}},
	{"deep and unicode names", func(b builder) {
		deep := ""
		for i := range 40 {
			deep = filepath.Join(deep, fmt.Sprintf("level%02d", i))
		}
		b.file(filepath.Join(deep, "leaf"), []byte("deep"), 0o644, 0, 0)
		// Byte order and locale order disagree on these.
		for i, n := range []string{"B", "a", "_x", "Z", "é", "e", "-", ".hidden", "ä", "日本語", "😀", "A-b", "a_b", "aB", "ab"} {
			b.file(filepath.Join("names", n), []byte(n), 0o644, 0, 0)
			b.dir(filepath.Join("dirs", n), 0o755, 0, 0)
			b.file(filepath.Join("dirs", n, "f"), []byte{byte(i)}, 0o644, 0, 0)
		}
	}},
	{"large directories", func(b builder) {
		// 2- and 4-byte framing offsets in dirtree objects.
		for i := range 3000 {
			b.file(fmt.Sprintf("big/file-with-a-longish-name-%05d", i), []byte(fmt.Sprint(i%7)), 0o644, 0, 0)
		}
		for i := range 40 {
			b.dir(fmt.Sprintf("mid/d%02d", i), 0o755, 0, 0)
			b.file(fmt.Sprintf("mid/f%02d", i), nil, 0o644, 0, 0)
		}
	}},
}

func baseOptions() Options {
	return Options{
		Branch:  "ostree/container/image/docker_3A__2F__2F_example_2E_com/os_3A_1",
		Subject: "docker://example.com/os:1",
		Metadata: []KV{
			{"ostree.manifest-digest", "sha256:0123"},
			{"ostree.manifest", `{"schemaVersion":2,"layers":[]}`},
			{"ostree.container.image-config", `{"config":{"Labels":{"containers.bootc":"1"}}}`},
			{"ostree.importer.version", "bootlace"},
			{"version", "42.1"},
		},
		Timestamp: time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC),
	}
}

func build(t testing.TB, dir string, fn func(builder)) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fn(builder{t: t, root: dir})
	return dir
}

func TestCommitMatchesOstree(t *testing.T) {
	requireOstreeRoot(t)
	for _, tc := range treeCases {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			opts := baseOptions()
			refRepo := newRepo(t, filepath.Join(tmp, "ref"))
			want := ostreeCommit(t, refRepo, build(t, filepath.Join(tmp, "ref", "stage"), tc.build), opts)

			orig := build(t, filepath.Join(tmp, "orig"), tc.build)
			// Hashing every file, and taking the checksums recorded
			// while the tree was written (see Known).
			for _, known := range []bool{false, true} {
				name := map[bool]string{false: "go", true: "go-known"}[known]
				repo := newRepo(t, filepath.Join(tmp, name))
				stage := build(t, filepath.Join(tmp, name, "stage"), tc.build)
				o := opts
				if known {
					o.Known = recordKnown(t, stage)
				}
				got, err := Commit(context.Background(), repo, stage, o)
				if err != nil {
					t.Fatal(err)
				}
				if got != want {
					t.Errorf("%s: commit %s, ostree made %s", name, got, want)
				}
				compareRepos(t, refRepo, repo)
				run(t, "ostree", "fsck", "--repo="+repo)
				if _, err := os.Lstat(stage); !os.IsNotExist(err) {
					t.Errorf("%s: stage %s still exists after the commit (err %v)", name, stage, err)
				}
				out := filepath.Join(tmp, name+"-checkout")
				run(t, "ostree", "--repo="+repo, "checkout", opts.Branch, out)
				compareTrees(t, orig, out)
			}
		})
	}
}

// A second commit on the same branch gets the first as parent, and
// metadata order, body and timestamp are carried as given.
func TestCommitParentAndMetadata(t *testing.T) {
	requireOstreeRoot(t)
	tmp := t.TempDir()
	opts := baseOptions()
	opts.Body = "a body\nwith lines"
	// Unsorted keys (ostree keeps command-line order) and a value big
	// enough for 4-byte framing offsets in the commit object.
	opts.Metadata = []KV{{"zz", "1"}, {"aa", "2"}, {"mm", "ünï"}, {"ostree.manifest", strings.Repeat("{}", 40000)}}
	refRepo := newRepo(t, filepath.Join(tmp, "ref"))
	repo := newRepo(t, filepath.Join(tmp, "go"))
	for i, tc := range treeCases[1:3] {
		opts.Timestamp = opts.Timestamp.Add(time.Hour)
		want := ostreeCommit(t, refRepo, build(t, filepath.Join(tmp, "ref", fmt.Sprint("stage", i)), tc.build), opts)
		got, err := Commit(context.Background(), repo, build(t, filepath.Join(tmp, "go", fmt.Sprint("stage", i)), tc.build), opts)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("commit %d: %s, ostree made %s", i, got, want)
		}
	}
	compareRepos(t, refRepo, repo)
	run(t, "ostree", "fsck", "--repo="+repo)
}

// objectList maps each object's relative path to its bytes (metadata
// objects) or nil (content objects, compared by name = checksum).
func objectList(t testing.TB, repo string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	root := filepath.Join(repo, "objects")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if strings.HasSuffix(rel, ".file") {
			out[rel] = nil
			return nil
		}
		data, err := os.ReadFile(p)
		out[rel] = data
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func compareRepos(t *testing.T, want, got string) {
	t.Helper()
	w, g := objectList(t, want), objectList(t, got)
	for k, v := range w {
		gv, ok := g[k]
		if !ok {
			t.Errorf("object %s missing from the Go-written repository", k)
		} else if !bytes.Equal(v, gv) {
			t.Errorf("object %s differs:\n got %x\nwant %x", k, gv, v)
		}
	}
	for k := range g {
		if _, ok := w[k]; !ok {
			t.Errorf("extra object %s in the Go-written repository", k)
		}
	}
	// Apart from objects and refs, the repository looks like ostree's
	// after a commit (no leftover temporary files).
	if a, b := repoFiles(t, want), repoFiles(t, got); a != b {
		t.Errorf("repository layout differs:\nostree:\n%s\ngo:\n%s", a, b)
	}
}

func repoFiles(t testing.TB, repo string) string {
	var out []string
	err := filepath.WalkDir(repo, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(repo, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, fmt.Sprintf("%s %v", rel, info.Mode()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

type entryInfo struct {
	mode     uint32
	uid, gid uint32
	target   string
	content  []byte
	xattrs   string
}

func describe(t testing.TB, path string) entryInfo {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	e := entryInfo{mode: st.Mode, uid: st.Uid, gid: st.Gid}
	xs, err := linkXattrs(path)
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i].name < xs[j].name })
	for _, x := range xs {
		e.xattrs += fmt.Sprintf("%s=%x;", x.name, x.value)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		e.target, err = os.Readlink(path)
	case unix.S_IFREG:
		e.content, err = os.ReadFile(path)
	}
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// compareTrees checks that got has exactly want's entries with the same
// type, mode, owner, xattrs (zero-length ones excepted: ostree drops
// them), symlink target and content. Timestamps are not compared: ostree
// does not record them.
func compareTrees(t testing.TB, want, got string) {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		seen[rel] = true
		w, g := describe(t, p), describe(t, filepath.Join(got, rel))
		if w.mode != g.mode || w.uid != g.uid || w.gid != g.gid || w.target != g.target || w.xattrs != g.xattrs || !bytes.Equal(w.content, g.content) {
			t.Errorf("%s differs:\nwant mode %o %d:%d -> %q xattrs %s (%d bytes)\n got mode %o %d:%d -> %q xattrs %s (%d bytes)",
				rel, w.mode, w.uid, w.gid, w.target, w.xattrs, len(w.content), g.mode, g.uid, g.gid, g.target, g.xattrs, len(g.content))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(got, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(got, p)
		if !seen[rel] {
			t.Errorf("%s in the checkout is not in the original tree", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
