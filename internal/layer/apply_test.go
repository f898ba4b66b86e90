package layer

import (
	"archive/tar"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootlace/bootlace/internal/errs"
	lt "github.com/bootlace/bootlace/internal/layer/layertest"
)

func TestApply(t *testing.T) {
	long := strings.Repeat("n", 255)
	deep := strings.TrimSuffix(strings.Repeat("dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd/", 62), "/") // 62*65-1 = 4029 bytes
	cases := []struct {
		name   string
		opts   Options
		layers [][]lt.Entry
		// want maps paths to "dir", "link:TARGET" or "file:CONTENT"; with
		// exact, the tree must hold nothing else.
		want   map[string]string
		exact  bool
		absent []string
		warns  []string // substrings, one warning each
		check  func(t *testing.T, root string, s map[string]lt.Node)
	}{
		{
			name: "name spellings and root entry",
			layers: [][]lt.Entry{{
				lt.Dir("./"), lt.File("./usr/bin/a", "A"), lt.File("usr/bin/b", "B"), lt.File("/usr/bin/c", "C"),
				lt.File("usr//bin/./d", "D"), lt.Dir("/opt/"),
			}},
			want:  map[string]string{"usr": "dir", "usr/bin": "dir", "usr/bin/a": "file:A", "usr/bin/b": "file:B", "usr/bin/c": "file:C", "usr/bin/d": "file:D", "opt": "dir"},
			exact: true,
			check: func(t *testing.T, root string, s map[string]lt.Node) {
				if m := s["usr/bin"].Mode; m != 0o755 {
					t.Errorf("implicit parent mode %v, want 0755", m)
				}
			},
		},
		{
			name: "early writeback changes nothing in the tree",
			opts: Options{Writeback: 1},
			layers: [][]lt.Entry{
				{lt.File("usr/big", strings.Repeat("b", 300<<10)), lt.File("usr/small", "s")},
				{lt.File("usr/big", "replaced"), lt.Hardlink("usr/h", "usr/small")},
			},
			want:  map[string]string{"usr": "dir", "usr/big": "file:replaced", "usr/small": "file:s", "usr/h": "file:s"},
			exact: true,
		},
		{
			name: "whiteout after same-named entry applies to lower only",
			layers: [][]lt.Entry{
				{lt.Dir("etc"), lt.File("etc/issue", "old"), lt.File("etc/motd", "m")},
				{lt.File("etc/issue", "new"), lt.Whiteout("etc/issue"), lt.Whiteout("etc/motd")},
			},
			want:   map[string]string{"etc/issue": "file:new"},
			absent: []string{"etc/motd"},
		},
		{
			name: "whiteout before same-named entry",
			layers: [][]lt.Entry{
				{lt.Dir("etc"), lt.File("etc/issue", "old")},
				{lt.Whiteout("etc/issue"), lt.File("etc/issue", "new")},
			},
			want: map[string]string{"etc/issue": "file:new"},
		},
		{
			name: "whiteout of a directory tree, recreated in the same layer (both orders)",
			layers: [][]lt.Entry{
				{lt.Dir("a"), lt.File("a/old", "o"), lt.Dir("a/sub"), lt.File("a/sub/x", "x"), lt.Dir("b"), lt.File("b/old", "o"), lt.Dir("c"), lt.File("c/old", "o")},
				{
					lt.Whiteout("a"), lt.Dir("a"), lt.File("a/new", "n"),
					lt.Dir("b"), lt.File("b/new", "n"), lt.Whiteout("b"),
					lt.Whiteout("c"),
				},
			},
			want:   map[string]string{"a/new": "file:n", "b/new": "file:n"},
			absent: []string{"a/old", "a/sub", "b/old", "c"},
		},
		{
			name: "same-layer whiteouts of a symlink and a directory (orderings other appliers get wrong)",
			layers: [][]lt.Entry{
				{lt.Dir("var/mail"), lt.File("var/mail/old", "o"), lt.Dir("etc/issue"), lt.File("etc/issue/old", "o")},
				{
					lt.Symlink("var/mail", "spool/mail"), lt.Whiteout("var/mail"),
					lt.Whiteout("etc/issue"), lt.Dir("etc/issue"), lt.File("etc/issue/new", "n"),
				},
			},
			want:   map[string]string{"var/mail": "link:spool/mail", "etc/issue/new": "file:n"},
			absent: []string{"etc/issue/old"},
		},
		{
			name: "opaque directory before and after its new children",
			layers: [][]lt.Entry{
				{lt.Dir("a"), lt.File("a/old", "o"), lt.Dir("a/d"), lt.File("a/d/deep", "o"), lt.Dir("b"), lt.File("b/old", "o"), lt.Dir("b/d"), lt.File("b/d/deep", "o")},
				{
					lt.Dir("a"), lt.Opaque("a"), lt.File("a/new", "n"), lt.Dir("a/d"),
					lt.Dir("b"), lt.Dir("b/d"), lt.File("b/d/new", "n"), lt.File("b/new", "n"), lt.Opaque("b"),
				},
			},
			want:   map[string]string{"a/new": "file:n", "a/d": "dir", "b/new": "file:n", "b/d/new": "file:n"},
			absent: []string{"a/old", "a/d/deep", "b/old", "b/d/deep"},
		},
		{
			name: "opaque root",
			layers: [][]lt.Entry{
				{lt.File("x", "x"), lt.Dir("d"), lt.File("d/y", "y")},
				{lt.Opaque("."), lt.File("z", "z")},
			},
			want:  map[string]string{"z": "file:z"},
			exact: true,
		},
		{
			name: "aufs metadata whiteouts are ignored",
			layers: [][]lt.Entry{
				{lt.File("x", "x")},
				{lt.File(".wh..wh.plnk", ""), lt.Dir(".wh..wh.orph")},
			},
			want:  map[string]string{"x": "file:x"},
			exact: true,
		},
		{
			name: "hardlinks within and across layers",
			layers: [][]lt.Entry{
				{lt.File("usr/bin/python3.11", "py"), lt.Hardlink("usr/bin/python3", "usr/bin/python3.11")},
				{lt.Hardlink("/usr/bin/python", "./usr/bin/python3.11"), lt.Symlink("s", "usr/bin/python3"), lt.Hardlink("s2", "s")},
			},
			want: map[string]string{"usr/bin/python": "file:py", "usr/bin/python3": "file:py", "s2": "link:usr/bin/python3"},
			check: func(t *testing.T, root string, s map[string]lt.Node) {
				if s["usr/bin/python"].Ino != s["usr/bin/python3.11"].Ino || s["usr/bin/python3"].Ino != s["usr/bin/python3.11"].Ino {
					t.Error("hardlinks do not share the inode")
				}
				if s["s2"].Ino != s["s"].Ino {
					t.Error("hardlink to a symlink is not the symlink itself")
				}
			},
		},
		{
			name: "hardlink replaces an existing file but not itself",
			layers: [][]lt.Entry{
				{lt.File("a", "A"), lt.File("b", "B")},
				{lt.Hardlink("b", "a"), lt.Hardlink("a", "a")},
			},
			want: map[string]string{"a": "file:A", "b": "file:A"},
		},
		{
			name: "modes, owners, setuid after chown",
			layers: [][]lt.Entry{{
				lt.File("usr/bin/sudo", "s").WithMode(0o4755).WithOwner(0, 0),
				lt.File("usr/bin/su2", "s").WithMode(0o4750).WithOwner(1000, 1001),
				lt.File("usr/bin/wall", "w").WithMode(0o2755).WithOwner(0, 5),
				lt.Dir("tmp").WithMode(0o1777),
				lt.Dir("var/mail").WithMode(0o2775).WithOwner(0, 8),
				lt.File("var/mail/root", "m").WithMode(0o660).WithOwner(0, 0),
				lt.Dir("var/mail/sub").WithMode(0o755),
				lt.File("open", "o").WithMode(0o777),
				lt.File("none", "n").WithMode(0o000),
				lt.Symlink("owned-link", "x").WithOwner(7, 8),
			}},
			check: func(t *testing.T, root string, s map[string]lt.Node) {
				want := map[string]struct {
					mode     fs.FileMode
					uid, gid uint32
				}{
					"usr/bin/sudo":  {0o755 | fs.ModeSetuid, 0, 0},
					"usr/bin/su2":   {0o750 | fs.ModeSetuid, 1000, 1001},
					"usr/bin/wall":  {0o755 | fs.ModeSetgid, 0, 5},
					"tmp":           {0o777 | fs.ModeSticky, 0, 0},
					"var/mail":      {0o775 | fs.ModeSetgid, 0, 8},
					"var/mail/root": {0o660, 0, 0},
					"var/mail/sub":  {0o755, 0, 0},
					"open":          {0o777, 0, 0},
					"none":          {0, 0, 0},
				}
				for p, w := range want {
					n := s[p]
					if n.Mode != w.mode || n.Uid != w.uid || n.Gid != w.gid {
						t.Errorf("%s: mode %v owner %d:%d, want %v %d:%d", p, n.Mode, n.Uid, n.Gid, w.mode, w.uid, w.gid)
					}
				}
				if n := s["owned-link"]; n.Uid != 7 || n.Gid != 8 {
					t.Errorf("symlink owner %d:%d, want 7:8", n.Uid, n.Gid)
				}
			},
		},
		{
			name: "xattrs on files, dirs and symlinks",
			layers: [][]lt.Entry{{
				lt.Dir("d").WithXattr("user.dir", "dv"),
				lt.File("d/f", "f").WithXattr("user.test", "v1").WithXattr("security.selinux", "system_u:object_r:bin_t:s0"),
				lt.Symlink("d/l", "f").WithXattr("trusted.t", "tv"),
				lt.File("o", "o").WithXattr("trusted.overlay.redirect", "/x"),
			}},
			want:  map[string]string{"d/f": "file:f", "d/l": "link:f"},
			warns: []string{"trusted.overlay.redirect"},
			check: func(t *testing.T, root string, s map[string]lt.Node) {
				if v := s["d/f"].Xattrs["user.test"]; v != "v1" {
					t.Errorf("user.test = %q", v)
				}
				if v := s["d/f"].Xattrs["security.selinux"]; !strings.HasPrefix(v, "system_u:object_r:bin_t:s0") {
					t.Errorf("security.selinux = %q", v)
				}
				if v := s["d"].Xattrs["user.dir"]; v != "dv" {
					t.Errorf("dir user.dir = %q", v)
				}
				if v := s["d/l"].Xattrs["trusted.t"]; v != "tv" {
					t.Errorf("symlink trusted.t = %q", v)
				}
				if _, ok := s["o"].Xattrs["trusted.overlay.redirect"]; ok {
					t.Error("overlay xattr was applied")
				}
			},
		},
		{
			name: "replacing entries of another type",
			layers: [][]lt.Entry{
				{lt.Dir("d2f"), lt.File("d2f/x", "x"), lt.File("f2d", "f"), lt.Dir("keep").WithMode(0o700), lt.File("keep/x", "x"), lt.Symlink("l2f", "target"), lt.File("target", "t"), lt.Dir("d2l"), lt.File("d2l/x", "x")},
				{lt.File("d2f", "now file"), lt.Dir("f2d"), lt.Dir("keep").WithMode(0o755), lt.File("l2f", "now file"), lt.Symlink("d2l", "target")},
			},
			want: map[string]string{"d2f": "file:now file", "f2d": "dir", "keep/x": "file:x", "l2f": "file:now file", "target": "file:t", "d2l": "link:target"},
			check: func(t *testing.T, root string, s map[string]lt.Node) {
				if s["keep"].Mode != 0o755 {
					t.Errorf("dir over dir mode %v, want 0755", s["keep"].Mode)
				}
			},
		},
		{
			name: "directory replaced by a symlink inside one layer, then written through",
			layers: [][]lt.Entry{{
				lt.Dir("d"), lt.File("d/f", "f"), lt.Dir("e"), lt.Symlink("d", "e"), lt.File("d/g", "g"),
			}},
			want:   map[string]string{"d": "link:e", "e/g": "file:g"},
			absent: []string{"e/f"},
		},
		{
			name:   "long names",
			layers: [][]lt.Entry{{lt.File(long, "l"), lt.File("x/"+long+"/"+long, "l2"), lt.File(deep+"/f", "deep")}},
			want:   map[string]string{long: "file:l", "x/" + long + "/" + long: "file:l2", deep + "/f": "file:deep"},
		},
		{
			name:   "many files",
			layers: [][]lt.Entry{lt.Many("usr/share", 3000, 37, 10)},
			check: func(t *testing.T, root string, s map[string]lt.Node) {
				files := 0
				for _, n := range s {
					if n.Type.IsRegular() {
						files++
					}
				}
				if files != 3000 {
					t.Errorf("%d files, want 3000", files)
				}
			},
		},
		{
			name: "ostree conventions",
			opts: Options{Ostree: true},
			layers: [][]lt.Entry{
				{
					lt.Dir("etc"), lt.File("etc/passwd", "p"), lt.File("etc/old", "o"), lt.Dir("run"), lt.Dir("run/foo"), lt.File("run/foo/x", "x"),
					lt.Dir("tmp").WithMode(0o1777), lt.File("tmp/junk", "j"), lt.Dir("proc"), lt.Dir("sys"), lt.Dir("dev"), lt.CharDev("dev/null", 1, 3),
					lt.Hardlink("usr/share/passwd.bak", "etc/passwd"),
				},
				{lt.Hardlink("etc/passwd-", "/etc/passwd"), lt.Whiteout("etc/old"), lt.Hardlink("lost", "run/foo/x"), lt.Opaque("tmp")},
			},
			want: map[string]string{
				"usr/etc/passwd": "file:p", "usr/etc/passwd-": "file:p", "usr/share/passwd.bak": "file:p",
				"run": "dir", "tmp": "dir", "proc": "dir", "sys": "dir", "dev": "dir",
			},
			absent: []string{"etc", "run/foo", "tmp/junk", "dev/null", "usr/etc/old", "lost"},
			warns:  []string{"hardlink /lost"}, // dev/null goes with the rest of /dev
		},
		{
			name:   "device nodes and FIFOs are dropped with a warning",
			layers: [][]lt.Entry{{lt.CharDev("dev/console", 5, 1), lt.Entry{Name: "dev/sda", Type: tar.TypeBlock, Devmajor: 8}, lt.Fifo("run/initctl"), lt.File("ok", "ok")}},
			want:   map[string]string{"ok": "file:ok"},
			absent: []string{"dev/console", "dev/sda", "run/initctl"},
			warns:  []string{"character device /dev/console", "block device /dev/sda", "FIFO /run/initctl"},
		},
		{
			name: "duplicate entries: the last one wins",
			layers: [][]lt.Entry{{
				lt.File("x", "1"), lt.File("x", "2"), lt.File("y", "f"), lt.Dir("y"), lt.File("y/z", "z"), lt.Symlink("w", "x"), lt.File("w", "w"),
			}},
			want: map[string]string{"x": "file:2", "y/z": "file:z", "w": "file:w"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			_, warns, err := applyAll(root, tc.opts, tars(t, tc.layers...)...)
			if err != nil {
				t.Fatalf("apply: %v", err)
			}
			s := snapshot(t, root)
			for p, w := range tc.want {
				n, ok := s[p]
				if !ok {
					t.Errorf("%s missing", p)
					continue
				}
				if got := describe(t, root, p, n); got != w {
					t.Errorf("%s = %q, want %q", p, got, w)
				}
			}
			if tc.exact {
				for p, n := range s {
					if _, ok := tc.want[p]; !ok {
						t.Errorf("unexpected %s (%s)", p, describe(t, root, p, n))
					}
				}
			}
			for _, p := range tc.absent {
				if _, ok := s[p]; ok {
					t.Errorf("%s should be absent", p)
				}
			}
			if len(warns) != len(tc.warns) {
				t.Errorf("warnings %q, want %d matching %q", warns, len(tc.warns), tc.warns)
			}
			for _, w := range tc.warns {
				found := false
				for _, g := range warns {
					found = found || strings.Contains(g, w)
				}
				if !found {
					t.Errorf("no warning mentions %q in %q", w, warns)
				}
			}
			if tc.check != nil {
				tc.check(t, root, s)
			}
		})
	}
}

func TestApplyStats(t *testing.T) {
	root := t.TempDir()
	st, _, err := applyAll(root, Options{}, tars(t,
		[]lt.Entry{lt.Dir("d"), lt.File("d/a", "12345"), lt.Symlink("l", "d/a"), lt.Hardlink("h", "d/a"), lt.Fifo("p")},
		[]lt.Entry{lt.Whiteout("l"), lt.Opaque("d")},
	)...)
	if err != nil {
		t.Fatal(err)
	}
	want := []Stats{{Files: 1, Dirs: 1, Symlinks: 1, Hardlinks: 1, Bytes: 5, Dropped: 1}, {Whiteouts: 2}}
	for i := range want {
		if st[i] != want[i] {
			t.Errorf("layer %d stats %+v, want %+v", i, st[i], want[i])
		}
	}
}

func TestNewApplierErrors(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "file")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, root := range []string{filepath.Join(dir, "missing"), f} {
		_, err := NewApplier(root, Options{})
		if err == nil || errs.KindOf(err) != errs.Target || !strings.Contains(err.Error(), root) {
			t.Errorf("NewApplier(%s) = %v, want a target error naming it", root, err)
		}
	}
}

func TestApplyCanceled(t *testing.T) {
	a, err := NewApplier(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = a.Apply(ctx, strings.NewReader(string(lt.MustTar(t, lt.File("x", "x")))))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply with a canceled context = %v", err)
	}
}

func TestApplyMaxBytes(t *testing.T) {
	layer := lt.MustTar(t, lt.File("a", strings.Repeat("x", 10000)))
	for _, tc := range []struct {
		max     int64
		wantErr bool
	}{{int64(len(layer)), false}, {int64(len(layer)) - 1, true}, {0, false}} {
		root := t.TempDir()
		_, _, err := applyAll(root, Options{MaxBytes: tc.max}, layer)
		if (err != nil) != tc.wantErr {
			t.Errorf("MaxBytes %d on a %d-byte layer: %v", tc.max, len(layer), err)
		}
		if tc.wantErr && (!errors.Is(err, ErrTooLarge) || errs.KindOf(err) != errs.Image) {
			t.Errorf("MaxBytes %d: error %v is not an image ErrTooLarge", tc.max, err)
		}
	}
}

// TestApplyDrainsTrailingData checks that the whole stream is consumed, so
// a digest the caller computes over it covers every byte.
func TestApplyDrainsTrailingData(t *testing.T) {
	layer := append(lt.MustTar(t, lt.File("a", "a")), make([]byte, 8192)...)
	r := strings.NewReader(string(layer))
	a, err := NewApplier(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Apply(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if r.Len() != 0 {
		t.Errorf("%d bytes left unread", r.Len())
	}
}

func TestApplyAfterClose(t *testing.T) {
	a, err := NewApplier(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := a.Apply(context.Background(), strings.NewReader("")); err == nil {
		t.Error("Apply after Close succeeded")
	}
}

// TestApplyNoDescriptorLeak applies hostile and ordinary layers repeatedly
// and checks the process's open descriptors do not grow.
func TestApplyNoDescriptorLeak(t *testing.T) {
	count := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	before := count()
	for i := 0; i < 3; i++ {
		for _, tc := range hostileCases() {
			if tc.opts.MaxBytes != 0 {
				continue
			}
			base, root := newCanaryBase(t)
			applyAll(root, tc.opts, tc.layers(t, filepath.Join(base, canaryName))...)
		}
	}
	if after := count(); after > before+2 {
		t.Errorf("open descriptors grew from %d to %d", before, after)
	}
}
