package ostreecommit

import (
	"crypto/sha256"
	"encoding/binary"
	"sort"
	"strings"
	"unicode/utf8"
)

// xattr is one extended attribute as ostree records it.
type xattr struct {
	name  string // without the trailing NUL
	value []byte
}

// gvXattrs is the "a(ayay)" ostree uses for xattrs: names carry their
// trailing NUL and the list is sorted by name (strcmp), as libglnx
// returns it when reading from disk.
func gvXattrs(xs []xattr) gv {
	sort.Slice(xs, func(i, j int) bool { return xs[i].name < xs[j].name })
	elems := make([]gv, len(xs))
	for i, x := range xs {
		elems[i] = gvTuple(gvBytes(append([]byte(x.name), 0)), gvBytes(x.value))
	}
	return gvArray(1, false, elems)
}

// fileHeader is the prefix that a content object's checksum covers before
// the content: BE32 length, four zero bytes, then the normal-form
// "(uuuusa(ayay))" of uid, gid, mode (with S_IFMT), rdev (0), symlink
// target and xattrs, integers big-endian.
func fileHeader(uid, gid, mode uint32, symlink string, xs []xattr) []byte {
	h := gvTuple(gvU32BE(uid), gvU32BE(gid), gvU32BE(mode), gvU32BE(0), gvString(symlink), gvXattrs(xs))
	out := make([]byte, 8, 8+len(h.data))
	binary.BigEndian.PutUint32(out, uint32(len(h.data)))
	return append(out, h.data...)
}

// dirMeta is the ".dirmeta" object: "(uuua(ayay))", integers big-endian,
// mode including S_IFDIR.
func dirMeta(uid, gid, mode uint32, xs []xattr) []byte {
	return gvTuple(gvU32BE(uid), gvU32BE(gid), gvU32BE(mode), gvXattrs(xs)).data
}

type fileEntry struct {
	name    string
	sum     [32]byte
	symlink bool // walk state: how to hash it
}

type dirEntry struct {
	name    string
	treeSum [32]byte
	metaSum [32]byte
}

// dirTree is the ".dirtree" object: "(a(say)a(sayay))", files and
// subdirectories each sorted by name in byte order (strcmp), which is how
// ostree sorts mutable-tree entries regardless of locale.
func dirTree(files []fileEntry, dirs []dirEntry) []byte {
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	sort.Slice(dirs, func(i, j int) bool { return dirs[i].name < dirs[j].name })
	fe := make([]gv, len(files))
	for i := range files {
		fe[i] = gvTuple(gvString(files[i].name), gvBytes(files[i].sum[:]))
	}
	de := make([]gv, len(dirs))
	for i := range dirs {
		de[i] = gvTuple(gvString(dirs[i].name), gvBytes(dirs[i].treeSum[:]), gvBytes(dirs[i].metaSum[:]))
	}
	return gvTuple(gvArray(1, false, fe), gvArray(1, false, de)).data
}

// KV is one string-valued commit metadata entry.
type KV struct {
	Key, Value string
}

// commitObject is the ".commit" object:
// "(a{sv}aya(say)sstayay)" = metadata, parent, related (always empty
// here), subject, body, timestamp (big-endian), root dirtree and root
// dirmeta checksums. Metadata keeps the caller's order, as ostree's
// command line does with --add-metadata-string.
func commitObject(meta []KV, parent []byte, subject, body string, timestamp uint64, rootTree, rootMeta [32]byte) []byte {
	entries := make([]gv, len(meta))
	for i, kv := range meta {
		entries[i] = gvTuple(gvString(kv.Key), gvVariant(gvString(kv.Value), "s"))
	}
	return gvTuple(
		gvArray(8, false, entries),
		gvBytes(parent),
		gvArray(1, false, nil),
		gvString(subject),
		gvString(body),
		gvU64BE(timestamp),
		gvBytes(rootTree[:]),
		gvBytes(rootMeta[:]),
	).data
}

func sum(b []byte) [32]byte { return sha256.Sum256(b) }

// validName reports whether ostree accepts name as a tree entry: valid
// UTF-8 (a GVariant string), not empty, ".", ".." and without "/".
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.Contains(name, "/") && utf8.ValidString(name)
}
