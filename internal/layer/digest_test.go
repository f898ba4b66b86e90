package layer

import (
	"crypto/sha256"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	lt "github.com/bootlace/bootlace/internal/layer/layertest"
)

// fakeDigester hashes "uid:gid:mode|" then the content, and records what
// Done saw per inode.
type fakeDigester struct {
	news []string
	done map[uint64]string // inode -> hex sum, or "nil"
}

type fakeHash struct {
	hash.Hash
	uid, gid, mode uint32
}

func (f *fakeDigester) New(uid, gid, mode uint32) hash.Hash {
	f.news = append(f.news, fmt.Sprintf("%d:%d:%o", uid, gid, mode))
	h := &fakeHash{Hash: sha256.New(), uid: uid, gid: gid, mode: mode}
	fmt.Fprintf(h, "%d:%d:%o|", uid, gid, mode)
	return h
}

func (f *fakeDigester) Done(st *unix.Stat_t, h hash.Hash) {
	if h == nil {
		f.done[st.Ino] = "nil"
		return
	}
	fh := h.(*fakeHash)
	if st.Uid != fh.uid || st.Gid != fh.gid || st.Mode != fh.mode {
		f.done[st.Ino] = fmt.Sprintf("mismatch: hashed %d:%d:%o, file is %d:%d:%o", fh.uid, fh.gid, fh.mode, st.Uid, st.Gid, st.Mode)
		return
	}
	f.done[st.Ino] = fmt.Sprintf("%x", h.Sum(nil))
}

// The digester sees every regular file's bytes with the owner and mode
// the file really gets; files with xattrs are reported unhashed.
func TestApplyDigest(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for owners and xattrs")
	}
	root := t.TempDir()
	d := &fakeDigester{done: map[uint64]string{}}
	layers := tars(t,
		[]lt.Entry{
			lt.Dir("usr"), lt.File("usr/a", "A"),
			lt.File("usr/suid", "S").WithMode(0o4755).WithOwner(0, 0),
			lt.File("usr/owned", "O").WithMode(0o640).WithOwner(1000, 100),
			lt.File("usr/big", strings.Repeat("x", 600<<10)),
			lt.File("usr/cap", "C").WithXattr("security.capability", "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
			lt.File("usr/replaced", "old"),
		},
		[]lt.Entry{lt.File("usr/replaced", "new"), lt.Hardlink("usr/a-link", "usr/a")},
	)
	if _, _, err := applyAll(root, Options{Digest: d}, layers...); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, content string }{
		{"usr/a", "A"}, {"usr/a-link", "A"}, {"usr/suid", "S"}, {"usr/owned", "O"},
		{"usr/big", strings.Repeat("x", 600<<10)}, {"usr/replaced", "new"}, {"usr/cap", ""},
	} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, tc.path), &st); err != nil {
			t.Fatal(err)
		}
		want := "nil"
		if tc.path != "usr/cap" {
			want = fmt.Sprintf("%x", sha256.Sum256(fmt.Appendf(nil, "%d:%d:%o|%s", st.Uid, st.Gid, st.Mode, tc.content)))
		}
		if got := d.done[st.Ino]; got != want {
			t.Errorf("%s: digester recorded %q, want %q", tc.path, got, want)
		}
	}
	// One New per regular file written (not the hard link, not the file with xattrs).
	if len(d.news) != 6 {
		t.Errorf("digester asked for %d hashes (%v), want 6", len(d.news), d.news)
	}
}
