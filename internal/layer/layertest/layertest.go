// Package layertest builds synthetic OCI layers (tar streams, optionally
// gzip or zstd compressed) and snapshots unpacked trees, for tests of the
// layer applier and of everything that consumes layers.
package layertest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
	"golang.org/x/sys/unix"
)

// Entry is one tar entry. Zero fields get sensible defaults: Type TypeReg,
// Mode 0644 for files, 0755 for directories, 0777 for symlinks.
type Entry struct {
	Name     string
	Type     byte
	Mode     int64
	Uid, Gid int
	Body     []byte
	Linkname string
	Xattrs   map[string]string
	// Devmajor and Devminor are used for device entries.
	Devmajor, Devminor int64
	// ModeSet makes a zero Mode mean mode 0 rather than the default.
	ModeSet bool
	// Size, when non-zero, is written to the header instead of len(Body),
	// to craft inconsistent layers: a larger Size ends the archive right
	// after Body (a truncated stream); a smaller one writes the rest of Body
	// as unaligned garbage after the entry.
	Size int64
}

// File returns a regular file entry.
func File(name, body string) Entry { return Entry{Name: name, Type: tar.TypeReg, Body: []byte(body)} }

// Dir returns a directory entry.
func Dir(name string) Entry { return Entry{Name: name, Type: tar.TypeDir} }

// Symlink returns a symlink entry name -> target.
func Symlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeSymlink, Linkname: target}
}

// Hardlink returns a hardlink entry name -> target (a path in the image).
func Hardlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeLink, Linkname: target}
}

// Whiteout returns the whiteout entry that removes p from lower layers.
func Whiteout(p string) Entry {
	dir, base := path.Split(p)
	return File(dir+".wh."+base, "")
}

// Opaque returns the entry that hides dir's lower-layer contents.
func Opaque(dir string) Entry {
	return File(strings.TrimSuffix(dir, "/")+"/.wh..wh..opq", "")
}

// Fifo returns a FIFO entry.
func Fifo(name string) Entry { return Entry{Name: name, Type: tar.TypeFifo} }

// CharDev returns a character device entry.
func CharDev(name string, major, minor int64) Entry {
	return Entry{Name: name, Type: tar.TypeChar, Devmajor: major, Devminor: minor}
}

// WithMode returns e with the given mode (permission and special bits).
func (e Entry) WithMode(m int64) Entry { e.Mode, e.ModeSet = m, true; return e }

// WithOwner returns e owned by uid:gid.
func (e Entry) WithOwner(uid, gid int) Entry { e.Uid, e.Gid = uid, gid; return e }

// WithXattr returns e with one more xattr.
func (e Entry) WithXattr(k, v string) Entry {
	m := make(map[string]string, len(e.Xattrs)+1)
	for ok, ov := range e.Xattrs {
		m[ok] = ov
	}
	m[k] = v
	e.Xattrs = m
	return e
}

func (e Entry) header() *tar.Header {
	h := &tar.Header{
		Name:     e.Name,
		Typeflag: e.Type,
		Mode:     e.Mode,
		Uid:      e.Uid,
		Gid:      e.Gid,
		Linkname: e.Linkname,
		Devmajor: e.Devmajor,
		Devminor: e.Devminor,
		Format:   tar.FormatPAX,
	}
	if h.Typeflag == 0 {
		h.Typeflag = tar.TypeReg
	}
	if h.Mode == 0 && !e.ModeSet {
		switch h.Typeflag {
		case tar.TypeDir:
			h.Mode = 0o755
		case tar.TypeSymlink:
			h.Mode = 0o777
		default:
			h.Mode = 0o644
		}
	}
	if h.Typeflag == tar.TypeReg {
		h.Size = int64(len(e.Body))
		if e.Size != 0 {
			h.Size = e.Size
		}
	}
	if len(e.Xattrs) > 0 {
		h.PAXRecords = make(map[string]string, len(e.Xattrs))
		for k, v := range e.Xattrs {
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
	}
	return h
}

// Tar builds an uncompressed tar stream of the entries, in order.
func Tar(entries ...Entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.header()
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("tar header %s: %w", e.Name, err)
		}
		body := e.Body
		if h.Typeflag != tar.TypeReg {
			continue
		}
		if h.Size > int64(len(body)) {
			// Truncated stream: the data ends early and so does the archive.
			if _, err := tw.Write(body); err != nil {
				return nil, fmt.Errorf("tar data %s: %w", e.Name, err)
			}
			return buf.Bytes(), nil
		}
		if _, err := tw.Write(body[:h.Size]); err != nil {
			return nil, fmt.Errorf("tar data %s: %w", e.Name, err)
		}
		if h.Size < int64(len(body)) {
			if err := tw.Flush(); err != nil {
				return nil, err
			}
			buf.Write(body[h.Size:])
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// MustTar is Tar for tests.
func MustTar(tb testing.TB, entries ...Entry) []byte {
	tb.Helper()
	b, err := Tar(entries...)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// Gzip compresses data with gzip.
func Gzip(data []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := pgzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Zstd compresses data with zstd.
func Zstd(data []byte) ([]byte, error) {
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		return nil, err
	}
	defer zw.Close()
	return zw.EncodeAll(data, nil), nil
}

// Many returns n small files spread over directories of at most perDir
// files each below prefix, preceded by their directory entries, as a
// builder of large realistic layers would emit them.
func Many(prefix string, n, perDir, size int) []Entry {
	if perDir <= 0 {
		perDir = 100
	}
	body := bytes.Repeat([]byte("x"), size)
	var out []Entry
	for i := 0; i < n; i++ {
		dir := fmt.Sprintf("%s/d%04d", prefix, i/perDir)
		if i%perDir == 0 {
			out = append(out, Dir(dir))
		}
		out = append(out, Entry{Name: fmt.Sprintf("%s/f%06d", dir, i), Type: tar.TypeReg, Body: body})
	}
	return out
}

// Node describes one path of an unpacked tree.
type Node struct {
	Type     fs.FileMode // fs.ModeDir, fs.ModeSymlink, 0 for regular files, ...
	Mode     fs.FileMode // permission and setuid/setgid/sticky bits
	Uid, Gid uint32
	Link     string // symlink target
	SHA256   string // regular file content
	Size     int64
	Ino      uint64
	Nlink    uint64
	Xattrs   map[string]string
}

// Snapshot lists every path below root (relative, "/"-separated, root
// itself excluded) with its metadata, without following symlinks.
func Snapshot(root string) (map[string]Node, error) {
	out := map[string]Node{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		n := Node{
			Type:  fi.Mode().Type(),
			Mode:  fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky),
			Uid:   st.Uid,
			Gid:   st.Gid,
			Size:  fi.Size(),
			Ino:   st.Ino,
			Nlink: uint64(st.Nlink),
		}
		switch {
		case fi.Mode().Type() == fs.ModeSymlink:
			if n.Link, err = os.Readlink(p); err != nil {
				return err
			}
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			n.SHA256 = hex.EncodeToString(sum[:])
		}
		if n.Xattrs, err = xattrs(p); err != nil {
			return err
		}
		out[filepath.ToSlash(rel)] = n
		return nil
	})
	return out, err
}

func xattrs(p string) (map[string]string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		if err == unix.ENOTSUP {
			err = nil
		}
		return nil, err
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, k := range strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00") {
		vs, err := unix.Lgetxattr(p, k, nil)
		if err != nil {
			return nil, err
		}
		v := make([]byte, vs)
		vs, err = unix.Lgetxattr(p, k, v)
		if err != nil {
			return nil, err
		}
		out[k] = string(v[:vs])
	}
	return out, nil
}

// Paths returns the sorted paths of a snapshot.
func Paths(s map[string]Node) []string {
	out := make([]string, 0, len(s))
	for p := range s {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}
