package layer

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	lt "github.com/bootlace/bootlace/internal/layer/layertest"
)

// TestApplyGNUTarLayer builds a tree with the host's file system calls,
// archives it with GNU tar (PAX, numeric owners, xattrs) as image builders
// do, applies the archive, and compares the result with the source: types,
// modes with special bits, owners, contents, symlink targets, hardlink
// groups and xattrs.
func TestApplyGNUTarLayer(t *testing.T) {
	tarBin, err := exec.LookPath("tar")
	if err != nil {
		t.Fatalf("GNU tar is needed to build the interop layer (apt-get install tar): %v", err)
	}
	base := t.TempDir()
	src := filepath.Join(base, "src")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mkfile := func(p, body string, mode os.FileMode, uid, gid int) {
		t.Helper()
		full := filepath.Join(src, p)
		must(os.MkdirAll(filepath.Dir(full), 0o755))
		must(os.WriteFile(full, []byte(body), 0o600))
		must(os.Lchown(full, uid, gid))
		must(unix.Chmod(full, uint32(mode)))
	}
	must(os.MkdirAll(src, 0o755))
	mkfile("usr/bin/sudo", "sudo", 0o4755, 0, 0)
	mkfile("usr/bin/crontab", "cron", 0o2755, 0, 104)
	mkfile("usr/lib/big", strings.Repeat("0123456789abcdef", 1<<16), 0o644, 0, 0)
	mkfile("usr/lib/empty", "", 0o600, 0, 0)
	mkfile("home/user/.profile", "profile", 0o640, 1000, 1000)
	must(os.Lchown(filepath.Join(src, "home/user"), 1000, 1000))
	must(unix.Chmod(filepath.Join(src, "home/user"), 0o700))
	must(os.Mkdir(filepath.Join(src, "tmp"), 0o755))
	must(unix.Chmod(filepath.Join(src, "tmp"), 0o1777))
	must(os.Link(filepath.Join(src, "usr/bin/sudo"), filepath.Join(src, "usr/bin/sudoedit")))
	must(os.Symlink("usr/lib", filepath.Join(src, "lib")))
	must(os.Symlink("/usr/bin/sudo", filepath.Join(src, "usr/bin/abs")))
	must(unix.Lsetxattr(filepath.Join(src, "usr/lib/big"), "user.checksum", []byte("abc"), 0))
	must(unix.Lsetxattr(filepath.Join(src, "usr/bin/crontab"), "trusted.cap", []byte{0, 1, 2, 0}, 0))

	layer := filepath.Join(base, "layer.tar")
	out, err := exec.Command(tarBin, "--format=pax", "--numeric-owner", "--xattrs", "--xattrs-include=*",
		"-C", src, "-cf", layer, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	data, err := os.ReadFile(layer)
	must(err)
	root := filepath.Join(base, "root")
	must(os.Mkdir(root, 0o755))
	if _, _, err := applyAll(root, Options{}, data); err != nil {
		t.Fatal(err)
	}

	want, got := snapshot(t, src), snapshot(t, root)
	if !reflect.DeepEqual(lt.Paths(want), lt.Paths(got)) {
		t.Fatalf("paths differ:\nsource %q\napplied %q", lt.Paths(want), lt.Paths(got))
	}
	groups := func(s map[string]lt.Node) map[string]string {
		// Map each path to the first path sharing its inode.
		first := map[uint64]string{}
		out := map[string]string{}
		for _, p := range lt.Paths(s) {
			if _, ok := first[s[p].Ino]; !ok {
				first[s[p].Ino] = p
			}
			out[p] = first[s[p].Ino]
		}
		return out
	}
	if m := want["usr/bin/sudo"].Mode; m&os.ModeSetuid == 0 || want["usr/bin/sudo"].Nlink != 2 {
		t.Fatalf("source tree not built as intended: sudo mode %v", m)
	}
	wg, gg := groups(want), groups(got)
	for p, w := range want {
		g := got[p]
		w.Ino, g.Ino = 0, 0
		if w.Type.IsDir() {
			w.Size, g.Size = 0, 0 // directory sizes depend on history
		}
		if !reflect.DeepEqual(w, g) {
			t.Errorf("%s:\nsource  %+v\napplied %+v", p, w, g)
		}
		if wg[p] != gg[p] {
			t.Errorf("%s: hardlinked with %s in the source, with %s applied", p, wg[p], gg[p])
		}
	}
}
