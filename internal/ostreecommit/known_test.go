package ostreecommit

import (
	"context"
	"crypto/sha256"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// recordKnown records every regular file of tree without xattrs the way
// the layer applier does: hashed with its owner and mode, stat after.
func recordKnown(t testing.TB, tree string) *Known {
	t.Helper()
	k := NewKnown()
	err := filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if n, _ := unix.Llistxattr(p, nil); n > 0 {
			k.Done(&st, nil)
			return nil
		}
		h := k.New(st.Uid, st.Gid, st.Mode)
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		k.Done(&st, h)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// A recorded checksum is used only while the file is what was hashed.
func TestKnownLookup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for chown and trusted.* xattrs")
	}
	content := []byte("hello, ostree\n")
	later := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, p string)
		hit    bool
	}{
		{"unchanged", func(*testing.T, string) {}, true},
		{"hard link added", func(t *testing.T, p string) {
			if err := os.Link(p, p+".link"); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"renamed", func(t *testing.T, p string) {
			if err := os.Rename(p, p+".new"); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(p+".new", p); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"rewritten, same size", func(t *testing.T, p string) {
			if err := os.WriteFile(p, []byte("HELLO, OSTREE\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p, later, later); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"truncated", func(t *testing.T, p string) {
			if err := os.Truncate(p, 3); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"mode changed", func(t *testing.T, p string) {
			if err := os.Chmod(p, 0o600); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"owner changed", func(t *testing.T, p string) {
			if err := os.Chown(p, 1000, 1000); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"xattr added", func(t *testing.T, p string) {
			if err := unix.Setxattr(p, "trusted.bootlace", []byte("x"), 0); err != nil {
				t.Fatal(err)
			}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "f")
			if err := os.WriteFile(p, content, 0o644); err != nil {
				t.Fatal(err)
			}
			k := recordKnown(t, filepath.Dir(p))
			tc.change(t, p)
			got, _, err := hashRegular(context.Background(), p, make([]byte, 4096), k)
			if err != nil {
				t.Fatal(err)
			}
			want, _, err := hashRegular(context.Background(), p, make([]byte, 4096), nil)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("checksum %x with known checksums, %x from the file", got, want)
			}
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			xs, err := linkXattrs(p)
			if err != nil {
				t.Fatal(err)
			}
			_, hit := k.lookup(&st, fileHeader(st.Uid, st.Gid, st.Mode, "", xs))
			if hit != tc.hit {
				t.Errorf("recorded checksum used: %v, want %v", hit, tc.hit)
			}
		})
	}
}

// Done forgets an inode written without a hash, and does not record a
// file whose owner or mode is not the one it was hashed with; a recorded
// checksum is trusted as is (Commit does not read the file).
func TestKnownDone(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	hdr := fileHeader(st.Uid, st.Gid, st.Mode, "", nil)
	k := NewKnown()
	h := k.New(st.Uid, st.Gid, st.Mode)
	h.Write([]byte("not the data")) // trusted: Known vouches for what it was given
	k.Done(&st, h)
	sum, ok := k.lookup(&st, hdr)
	want := sha256.Sum256(append(append([]byte{}, hdr...), "not the data"...))
	if !ok || sum != want || k.Len() != 1 {
		t.Fatalf("lookup %x %v (len %d), want %x", sum, ok, k.Len(), want)
	}
	k.Done(&st, nil)
	if _, ok := k.lookup(&st, hdr); ok || k.Len() != 0 {
		t.Fatal("an inode written without a hash kept its old checksum")
	}
	k.Done(&st, k.New(st.Uid, st.Gid, st.Mode|0o111))
	if _, ok := k.lookup(&st, hdr); ok {
		t.Fatal("a file whose mode differs from the hashed one was recorded")
	}
	var nilKnown *Known
	if _, ok := nilKnown.lookup(&st, hdr); ok {
		t.Fatal("a nil Known vouched for a file")
	}
}
