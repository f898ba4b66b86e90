package ostreecommit

import (
	"crypto/sha256"
	"hash"
	"sync"

	"golang.org/x/sys/unix"
)

// Known holds content checksums computed while the files were being
// written (layer.Options.Digest), so that Commit need not read them again.
// An ostree content checksum is SHA-256 over the file's header (owner,
// mode, xattrs) followed by its bytes, so the writer must know the header
// up front: it hashes with the owner and mode it is about to give the file
// and no xattrs. Commit uses a recorded checksum only if the file is still
// the same inode with the same size and modification time and its header,
// as Commit reads it from disk, is the one that was hashed; otherwise it
// hashes the file itself. Safe for concurrent use.
type Known struct {
	mu sync.Mutex
	m  map[uint64]knownFile // by inode number
}

type knownFile struct {
	dev    uint64
	size   int64
	mtime  unix.Timespec
	header [32]byte // SHA-256 of the hashed header bytes
	sum    [32]byte
}

// NewKnown returns an empty set of known checksums.
func NewKnown() *Known { return &Known{m: map[uint64]knownFile{}} }

// pending is a content hash in progress: the header is written already.
type pending struct {
	hash.Hash
	uid, gid, mode uint32
	header         [32]byte
}

// New returns the hash to write a regular file's bytes to, for a file that
// gets owner uid:gid, mode (with S_IFREG) and no xattrs.
func (k *Known) New(uid, gid, mode uint32) hash.Hash {
	hdr := fileHeader(uid, gid, mode, "", nil)
	p := &pending{Hash: sha256.New(), uid: uid, gid: gid, mode: mode, header: sha256.Sum256(hdr)}
	p.Write(hdr)
	return p
}

// Done records the checksum of a file written through h (from New), given
// the file's stat once complete. A file whose owner or mode came out other
// than h was told, or written without a hash (h nil), leaves nothing
// recorded for its inode.
func (k *Known) Done(st *unix.Stat_t, h hash.Hash) {
	p, ok := h.(*pending)
	if !ok || st.Uid != p.uid || st.Gid != p.gid || st.Mode != p.mode {
		k.mu.Lock()
		delete(k.m, st.Ino)
		k.mu.Unlock()
		return
	}
	f := knownFile{dev: st.Dev, size: st.Size, mtime: st.Mtim, header: p.header}
	p.Sum(f.sum[:0])
	k.mu.Lock()
	k.m[st.Ino] = f
	k.mu.Unlock()
}

// Len is the number of checksums recorded.
func (k *Known) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}

// lookup returns the recorded checksum of the file with stat st and
// header bytes header, if there is one and it still applies.
func (k *Known) lookup(st *unix.Stat_t, header []byte) ([32]byte, bool) {
	if k == nil {
		return [32]byte{}, false
	}
	k.mu.Lock()
	f, ok := k.m[st.Ino]
	k.mu.Unlock()
	if !ok || f.dev != st.Dev || f.size != st.Size || f.mtime != st.Mtim || f.header != sha256.Sum256(header) {
		return [32]byte{}, false
	}
	return f.sum, true
}
