package layer

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bootlace/bootlace/internal/errs"
)

// Options tune how layers are applied.
type Options struct {
	// Ostree applies bootc's ostree path conventions: etc/... -> usr/etc/...
	// (hardlink targets too), children of run, tmp, proc, sys, dev dropped
	// (the top-level dirs themselves kept).
	Ostree bool
	// MaxBytes bounds the uncompressed size consumed from each layer
	// (decompression bombs); 0 = no bound.
	MaxBytes int64
	// Writeback starts the disk write of every file of at least this many
	// bytes as soon as it is written (sync_file_range, asynchronous), so
	// the disk works while later files are decompressed instead of all at
	// the final sync; 0 leaves writeback to the kernel.
	Writeback int64
	// Digest, if set, sees the bytes of every regular file as they are
	// written (see Digester), so that a checksum of the tree's files
	// costs no second read.
	Digest Digester
	// Warn is called for dropped entries (device nodes, FIFOs, sockets),
	// dropped xattrs and xattrs the filesystem refuses. May be nil.
	Warn func(msg string)
}

// Digester hashes regular files while the applier writes them. New gets
// the owner and mode (with S_IFREG) the file is about to get and returns
// the hash its bytes go to; Done gets the file's stat once it is complete
// and that hash. Files with xattrs in the layer are not hashed: Done gets a
// nil hash for them, so that nothing recorded for an earlier file with the
// same inode number outlives it. Done is not called for a file that failed.
type Digester interface {
	New(uid, gid, mode uint32) hash.Hash
	Done(st *unix.Stat_t, h hash.Hash)
}

// Stats counts what one Apply did. Bytes is the regular-file content
// written; Dropped counts entries not created (device nodes, FIFOs, and
// with Options.Ostree the contents of run, tmp, proc, sys and dev).
type Stats struct {
	Files, Dirs, Symlinks, Hardlinks, Whiteouts int
	Bytes                                       int64
	Dropped                                     int
}

// ErrTooLarge is returned (wrapped) when a layer exceeds Options.MaxBytes.
var ErrTooLarge = errors.New("layer exceeds its size bound")

const (
	hintImage  = "the layer is malformed or hostile; check the image, or re-fetch it if it was corrupted in transit"
	hintTarget = "check free space and that the staging filesystem is writable"

	whPrefix = ".wh."
	whMeta   = ".wh..wh."
	whOpaque = ".wh..wh..opq"

	// Flags of layerPaths.
	pathCreated  = 1 // the layer has an entry for this path
	pathDir      = 2 // ... and it is a directory
	pathAncestor = 4 // the layer has entries below this path
)

// Applier applies successive layers into one root; it keeps the state needed
// across layers (the root descriptor, cached directories, a copy buffer).
// It is not safe for concurrent use.
type Applier struct {
	root   string
	rootFd int
	opts   Options
	euid   int
	egid   int
	umask  uint32
	dirs   dirCache
	buf    []byte
	// layerPaths records the paths the current layer created, so whiteouts
	// spare them whatever their order in the tar.
	layerPaths map[string]uint8
}

// NewApplier opens root, which must be an existing directory. Layers are
// then applied with Apply, lowest first; Close releases the descriptors.
func NewApplier(root string, opts Options) (*Applier, error) {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, errs.New(errs.Target, "opening staging root", root, err, "the staging root must be an existing directory")
	}
	return &Applier{
		root:   root,
		rootFd: fd,
		opts:   opts,
		euid:   os.Geteuid(),
		egid:   os.Getegid(),
		umask:  processUmask(),
		buf:    make([]byte, 256<<10),
	}, nil
}

// Close releases the root and cached directory descriptors.
func (a *Applier) Close() error {
	a.dirs.invalidate()
	if a.rootFd < 0 {
		return nil
	}
	err := unix.Close(a.rootFd)
	a.rootFd = -1
	if err != nil {
		return fmt.Errorf("closing staging root %s: %w", a.root, err)
	}
	return nil
}

func (a *Applier) warn(format string, args ...any) {
	if a.opts.Warn != nil {
		a.opts.Warn(fmt.Sprintf(format, args...))
	}
}

// boundedReader fails once more than max bytes have been read.
type boundedReader struct {
	r   io.Reader
	n   int64
	max int64
}

func (b *boundedReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.n > b.max {
		return n, fmt.Errorf("%w: more than %d bytes uncompressed", ErrTooLarge, b.max)
	}
	return n, err
}

// Apply applies one layer's uncompressed tar stream on top of what earlier
// calls applied. After the end-of-archive marker the rest of the stream is
// drained (within MaxBytes), so a digest computed over the stream by the
// caller covers every byte.
func (a *Applier) Apply(ctx context.Context, tarStream io.Reader) (Stats, error) {
	var st Stats
	if a.rootFd < 0 {
		return st, errs.New(errs.Internal, "applying layer", a.root, errors.New("applier is closed"), "")
	}
	var r io.Reader = tarStream
	if a.opts.MaxBytes > 0 {
		r = &boundedReader{r: r, max: a.opts.MaxBytes}
	}
	r = bufio.NewReaderSize(r, 64<<10)
	tr := tar.NewReader(r)
	a.layerPaths = make(map[string]uint8)
	defer func() { a.layerPaths = nil }()
	last := ""
	for {
		if err := ctx.Err(); err != nil {
			return st, fmt.Errorf("applying layer: %w", err)
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if errors.Is(err, tar.ErrInsecurePath) && hdr != nil {
			// cleanName below applies bootlace's own, stricter rules.
			err = nil
		}
		if err != nil {
			where := "at the start"
			if last != "" {
				where = "after entry " + strconv.Quote(last)
			}
			return st, a.fail(where, fmt.Errorf("reading tar stream: %w", err))
		}
		last = hdr.Name
		if err := a.entry(hdr, tr, &st); err != nil {
			return st, a.fail(hdr.Name, err)
		}
	}
	if _, err := io.CopyBuffer(io.Discard, r, a.buf); err != nil {
		return st, a.fail("after the end of the archive", fmt.Errorf("reading tar stream: %w", err))
	}
	return st, nil
}

func (a *Applier) fail(name string, err error) error {
	if targetErrno(err) {
		return errs.New(errs.Target, "applying layer", name, err, hintTarget)
	}
	return errs.New(errs.Image, "applying layer", name, err, hintImage)
}

func (a *Applier) mark(p string, isDir bool) {
	f := a.layerPaths[p]&pathAncestor | pathCreated
	if isDir {
		f |= pathDir
	}
	a.layerPaths[p] = f
	for q, _ := splitPath(p); q != ""; q, _ = splitPath(q) {
		if a.layerPaths[q]&pathAncestor != 0 {
			break
		}
		a.layerPaths[q] |= pathAncestor
	}
}

// entry applies one tar entry.
func (a *Applier) entry(hdr *tar.Header, tr *tar.Reader, st *Stats) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil // global PAX records name no file; the tar reader applied them
	}
	p, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	dir, base := splitPath(p)
	if strings.HasPrefix(base, whPrefix) {
		st.Whiteouts++
		return a.whiteout(dir, base)
	}
	if a.opts.Ostree {
		var keep bool
		if p, keep = ostreeMap(p); !keep {
			st.Dropped++
			return nil
		}
		dir, base = splitPath(p)
	}
	if hdr.Uid < 0 || hdr.Gid < 0 || int64(hdr.Uid) > 0xfffffffe || int64(hdr.Gid) > 0xfffffffe {
		return fmt.Errorf("invalid owner %d:%d", hdr.Uid, hdr.Gid)
	}
	mode := uint32(hdr.Mode) & 0o7777
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeCont: // the reader already maps TypeRegA
		if p == "" {
			return errors.New("a regular file cannot replace the root directory")
		}
		if a.opts.MaxBytes > 0 && hdr.Size > a.opts.MaxBytes {
			return fmt.Errorf("%w: entry declares %d bytes, the bound is %d", ErrTooLarge, hdr.Size, a.opts.MaxBytes)
		}
		n, err := a.file(dir, base, hdr, tr, mode)
		if err != nil {
			return err
		}
		a.mark(p, false)
		st.Files++
		st.Bytes += n
	case tar.TypeDir:
		if err := a.dir(p, dir, base, hdr, mode); err != nil {
			return err
		}
		if p != "" {
			a.mark(p, true)
		}
		st.Dirs++
	case tar.TypeSymlink:
		if p == "" {
			return errors.New("a symlink cannot replace the root directory")
		}
		if err := a.symlink(dir, base, hdr); err != nil {
			return err
		}
		a.mark(p, false)
		st.Symlinks++
	case tar.TypeLink:
		if p == "" {
			return errors.New("a hardlink cannot replace the root directory")
		}
		done, err := a.hardlink(dir, base, hdr)
		if err != nil {
			return err
		}
		if !done {
			st.Dropped++
			return nil
		}
		a.mark(p, false)
		st.Hardlinks++
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		kind := map[byte]string{tar.TypeChar: "character device", tar.TypeBlock: "block device", tar.TypeFifo: "FIFO"}[hdr.Typeflag]
		a.warn("dropped %s /%s: ostree cannot store it", kind, p)
		st.Dropped++
	default:
		return fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}
	return nil
}

// parent returns the open directory p, creating missing directories (0755,
// owned by the applier's user) on the way.
func (a *Applier) parent(p string) (dirEnt, error) {
	d, err := a.openDir(p)
	if err != unix.ENOENT || p == "" {
		if err != nil {
			return d, fmt.Errorf("opening parent directory /%s: %w", p, err)
		}
		return d, nil
	}
	pp, base := splitPath(p)
	up, err := a.parent(pp)
	if err != nil {
		return up, err
	}
	if err := unix.Mkdirat(up.fd, base, 0o755); err != nil && err != unix.EEXIST {
		return up, fmt.Errorf("creating parent directory /%s: %w", p, err)
	} else if err == nil && (up.setgid || a.umask&0o755 != 0) {
		// A setgid parent hands down its group and its setgid bit.
		if up.setgid && up.gid != uint32(a.egid) {
			if err := unix.Fchownat(up.fd, base, a.euid, a.egid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return up, fmt.Errorf("creating parent directory /%s: %w", p, err)
			}
		}
		if err := unix.Fchmodat(up.fd, base, 0o755, 0); err != nil {
			return up, fmt.Errorf("creating parent directory /%s: %w", p, err)
		}
	}
	d, err = a.openDir(p)
	if err != nil {
		return d, fmt.Errorf("opening parent directory /%s: %w", p, err)
	}
	return d, nil
}

// openDir returns the directory p, from the cache when possible.
func (a *Applier) openDir(p string) (dirEnt, error) {
	if d, ok := a.dirs.get(p); ok {
		return d, nil
	}
	fd := -1
	var err error
	if pp, base := splitPath(p); p != "" {
		if up, ok := a.dirs.get(pp); ok {
			// A real directory below a confined directory is confined too;
			// anything else (a symlink) goes through openat2 below.
			fd, err = unix.Openat(up.fd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err == unix.ENOENT {
				return dirEnt{}, err
			}
		}
	}
	if fd < 0 {
		fd, err = openInRoot(a.rootFd, p, unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			return dirEnt{}, err
		}
	}
	var s unix.Stat_t
	if err := unix.Fstat(fd, &s); err != nil {
		unix.Close(fd)
		return dirEnt{}, err
	}
	d := dirEnt{path: p, fd: fd, setgid: s.Mode&unix.S_ISGID != 0, gid: s.Gid}
	a.dirs.put(d)
	return d, nil
}

// clear removes whatever is at base in d so that a new entry can take its
// place. The directory cache is dropped when a directory or symlink goes,
// since cached descriptors may have been reached through it: callers must
// reopen their parent afterwards.
func (a *Applier) clear(d dirEnt, base string) error {
	var s unix.Stat_t
	if err := unix.Fstatat(d.fd, base, &s, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if err == unix.ENOENT {
			return nil
		}
		return err
	}
	switch s.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		a.dirs.invalidate()
		fd, err := openInRoot(a.rootFd, d.path, unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return removeTree(fd, base)
	case unix.S_IFLNK:
		err := unix.Unlinkat(d.fd, base, 0)
		a.dirs.invalidate()
		return err
	default:
		return unix.Unlinkat(d.fd, base, 0)
	}
}

// ownership decides the fchown and fchmod a new entry in d needs beyond
// what creating it with mode already gave it.
func (a *Applier) ownership(d dirEnt, hdr *tar.Header, mode uint32, isDir bool) (chown, chmod bool) {
	gid := uint32(a.egid)
	if d.setgid {
		gid = d.gid
	}
	chown = hdr.Uid != a.euid || uint32(hdr.Gid) != gid
	special := mode&(unix.S_ISUID|unix.S_ISGID|unix.S_ISVTX) != 0
	chmod = mode&a.umask != 0 ||
		(chown && special) || // chown clears setuid and setgid
		(isDir && (mode&(unix.S_ISUID|unix.S_ISGID) != 0 || d.setgid)) // mkdir ignores them, inherits setgid
	return chown, chmod
}

func (a *Applier) file(dir, base string, hdr *tar.Header, tr *tar.Reader, mode uint32) (int64, error) {
	var fd int
	var d dirEnt
	var err error
	for try := 0; ; try++ {
		if d, err = a.parent(dir); err != nil {
			return 0, err
		}
		fd, err = unix.Openat(d.fd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
		if err != unix.EEXIST || try > 0 {
			break
		}
		// Never truncate in place: the old file may be hardlinked elsewhere.
		if err = a.clear(d, base); err != nil {
			return 0, fmt.Errorf("replacing existing entry: %w", err)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("creating file: %w", err)
	}
	n, err := a.fill(fd, hdr, tr, d, mode)
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = fmt.Errorf("closing file: %w", cerr)
	}
	return n, err
}

func (a *Applier) fill(fd int, hdr *tar.Header, tr *tar.Reader, d dirEnt, mode uint32) (int64, error) {
	var written int64
	var h hash.Hash
	if a.opts.Digest != nil && !hasXattrs(hdr) {
		h = a.opts.Digest.New(uint32(hdr.Uid), uint32(hdr.Gid), unix.S_IFREG|mode)
	}
	for written < hdr.Size {
		chunk := a.buf
		if left := hdr.Size - written; left < int64(len(chunk)) {
			chunk = chunk[:left]
		}
		n, err := io.ReadFull(tr, chunk)
		if n > 0 {
			if werr := writeAll(fd, chunk[:n]); werr != nil {
				return written, fmt.Errorf("writing file: %w", werr)
			}
			if h != nil {
				h.Write(chunk[:n])
			}
			written += int64(n)
		}
		if err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return written, fmt.Errorf("truncated: header says %d bytes, the stream ends after %d", hdr.Size, written)
			}
			return written, fmt.Errorf("reading file data: %w", err)
		}
	}
	if a.opts.Writeback > 0 && written >= a.opts.Writeback {
		// Only a hint: an error here changes nothing about the file.
		_ = unix.SyncFileRange(fd, 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	}
	chown, chmod := a.ownership(d, hdr, mode, false)
	if chown {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return written, fmt.Errorf("setting owner: %w", err)
		}
	}
	if chmod {
		if err := unix.Fchmod(fd, mode); err != nil {
			return written, fmt.Errorf("setting mode: %w", err)
		}
	}
	if err := a.xattrs(hdr, func(k string, v []byte) error { return unix.Fsetxattr(fd, k, v, 0) }); err != nil {
		return written, err
	}
	if a.opts.Digest != nil {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return written, fmt.Errorf("reading back the file: %w", err)
		}
		a.opts.Digest.Done(&st, h)
	}
	return written, nil
}

func (a *Applier) dir(p, dir, base string, hdr *tar.Header, mode uint32) error {
	if p == "" {
		// The root itself: only its metadata can change.
		return a.rootMeta(hdr, mode)
	}
	var d dirEnt
	var err error
	for try := 0; ; try++ {
		if d, err = a.parent(dir); err != nil {
			return err
		}
		err = unix.Mkdirat(d.fd, base, mode)
		if err == nil {
			chown, chmod := a.ownership(d, hdr, mode, true)
			return a.dirMeta(d, base, hdr, mode, chown, chmod)
		}
		if err != unix.EEXIST {
			return fmt.Errorf("creating directory: %w", err)
		}
		var s unix.Stat_t
		if err := unix.Fstatat(d.fd, base, &s, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("inspecting existing entry: %w", err)
		}
		if s.Mode&unix.S_IFMT == unix.S_IFDIR {
			// A directory over a directory keeps the contents.
			chown := s.Uid != uint32(hdr.Uid) || s.Gid != uint32(hdr.Gid)
			chmod := s.Mode&0o7777 != mode || (chown && mode&(unix.S_ISUID|unix.S_ISGID) != 0)
			if chown || s.Mode&unix.S_ISGID != mode&unix.S_ISGID {
				// Cached descriptors remember what new entries inherit.
				a.dirs.invalidate()
				if d, err = a.parent(dir); err != nil {
					return err
				}
			}
			return a.dirMeta(d, base, hdr, mode, chown, chmod)
		}
		if try > 0 {
			return fmt.Errorf("creating directory: %w", unix.EEXIST)
		}
		if err := a.clear(d, base); err != nil {
			return fmt.Errorf("replacing existing entry: %w", err)
		}
	}
}

func (a *Applier) dirMeta(d dirEnt, base string, hdr *tar.Header, mode uint32, chown, chmod bool) error {
	if chown {
		if err := unix.Fchownat(d.fd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("setting owner: %w", err)
		}
	}
	if chmod {
		// base was just created or checked to be a directory, not a symlink.
		if err := unix.Fchmodat(d.fd, base, mode, 0); err != nil {
			return fmt.Errorf("setting mode: %w", err)
		}
	}
	if !hasXattrs(hdr) {
		return nil
	}
	fd, err := unix.Openat(d.fd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening directory for xattrs: %w", err)
	}
	defer unix.Close(fd)
	return a.xattrs(hdr, func(k string, v []byte) error { return unix.Fsetxattr(fd, k, v, 0) })
}

func (a *Applier) rootMeta(hdr *tar.Header, mode uint32) error {
	var s unix.Stat_t
	if err := unix.Fstat(a.rootFd, &s); err != nil {
		return fmt.Errorf("inspecting root: %w", err)
	}
	chown := s.Uid != uint32(hdr.Uid) || s.Gid != uint32(hdr.Gid)
	if chown {
		if err := unix.Fchown(a.rootFd, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("setting owner: %w", err)
		}
	}
	if chown || s.Mode&0o7777 != mode {
		if err := unix.Fchmod(a.rootFd, mode); err != nil {
			return fmt.Errorf("setting mode: %w", err)
		}
	}
	a.dirs.invalidate()
	return a.xattrs(hdr, func(k string, v []byte) error { return unix.Fsetxattr(a.rootFd, k, v, 0) })
}

func (a *Applier) symlink(dir, base string, hdr *tar.Header) error {
	target := hdr.Linkname
	switch {
	case target == "":
		return errors.New("symlink with an empty target")
	case strings.IndexByte(target, 0) >= 0:
		return errors.New("symlink target contains a NUL byte")
	case len(target) >= maxPath:
		return fmt.Errorf("symlink target is %d bytes long, over the %d-byte limit", len(target), maxPath-1)
	}
	var d dirEnt
	var err error
	for try := 0; ; try++ {
		if d, err = a.parent(dir); err != nil {
			return err
		}
		err = unix.Symlinkat(target, d.fd, base)
		if err != unix.EEXIST || try > 0 {
			break
		}
		if err = a.clear(d, base); err != nil {
			return fmt.Errorf("replacing existing entry: %w", err)
		}
	}
	if err != nil {
		return fmt.Errorf("creating symlink: %w", err)
	}
	if chown, _ := a.ownership(d, hdr, 0, false); chown {
		if err := unix.Fchownat(d.fd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("setting owner: %w", err)
		}
	}
	if !hasXattrs(hdr) {
		return nil
	}
	// No *at call sets an xattr on a symlink itself before Linux 6.13; the
	// directory's /proc magic link names it without following anything in
	// the image (lsetxattr does not follow the final symlink).
	lp := "/proc/self/fd/" + strconv.Itoa(d.fd) + "/" + base
	return a.xattrs(hdr, func(k string, v []byte) error { return unix.Lsetxattr(lp, k, v, 0) })
}

// hardlink links dir/base to the entry's target, resolved inside the root.
// It reports false when the target was dropped by the ostree conventions.
func (a *Applier) hardlink(dir, base string, hdr *tar.Header) (bool, error) {
	tp, err := cleanName(hdr.Linkname)
	if err != nil {
		return false, fmt.Errorf("hardlink target %q: %w", hdr.Linkname, err)
	}
	if a.opts.Ostree {
		var keep bool
		if tp, keep = ostreeMap(tp); !keep {
			a.warn("dropped hardlink /%s: its target /%s is not kept in an ostree tree", joinPath(dir, base), tp)
			return false, nil
		}
	}
	if tp == "" {
		return false, errors.New("hardlink to the root directory")
	}
	tdir, tbase := splitPath(tp)
	// A private descriptor: the cached ones may be closed by clear below.
	tfd, err := openInRoot(a.rootFd, tdir, unix.O_RDONLY|unix.O_DIRECTORY)
	if err == unix.ENOENT {
		return false, fmt.Errorf("hardlink target /%s does not exist in this or a lower layer", tp)
	}
	if err != nil {
		return false, fmt.Errorf("hardlink target /%s: %w", tp, err)
	}
	defer unix.Close(tfd)
	var ts unix.Stat_t
	if err := unix.Fstatat(tfd, tbase, &ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if err == unix.ENOENT {
			return false, fmt.Errorf("hardlink target /%s does not exist in this or a lower layer", tp)
		}
		return false, fmt.Errorf("hardlink target /%s: %w", tp, err)
	}
	if ts.Mode&unix.S_IFMT == unix.S_IFDIR {
		return false, fmt.Errorf("hardlink target /%s is a directory", tp)
	}
	for try := 0; ; try++ {
		d, err := a.parent(dir)
		if err != nil {
			return false, err
		}
		err = unix.Linkat(tfd, tbase, d.fd, base, 0)
		if err == nil {
			return true, nil
		}
		if err != unix.EEXIST || try > 0 {
			return false, fmt.Errorf("linking to /%s: %w", tp, err)
		}
		var s unix.Stat_t
		if unix.Fstatat(d.fd, base, &s, unix.AT_SYMLINK_NOFOLLOW) == nil && s.Dev == ts.Dev && s.Ino == ts.Ino {
			return true, nil // already the same file, e.g. a link to itself
		}
		if err := a.clear(d, base); err != nil {
			return false, fmt.Errorf("replacing existing entry: %w", err)
		}
	}
}

func hasXattrs(hdr *tar.Header) bool {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "SCHILY.xattr.") {
			return true
		}
	}
	return false
}

// xattrs sets the entry's SCHILY.xattr.* PAX records with set. Overlayfs
// control xattrs are dropped, and xattrs the filesystem does not support are
// reported; both through Warn, never silently.
func (a *Applier) xattrs(hdr *tar.Header, set func(k string, v []byte) error) error {
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		if name == "" || len(name) > 255 {
			return fmt.Errorf("invalid xattr name %q", name)
		}
		if strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.") {
			a.warn("dropped xattr %s on %s: overlayfs control attributes are not applied", name, hdr.Name)
			continue
		}
		err := set(name, []byte(v))
		switch {
		case err == nil:
		case err == unix.EOPNOTSUPP || err == unix.EPERM:
			a.warn("xattr %s on %s not stored: %v", name, hdr.Name, err)
		default:
			return fmt.Errorf("setting xattr %s: %w", name, err)
		}
	}
	return nil
}

// whiteout handles ".wh.NAME" and ".wh..wh..opq" in dir.
func (a *Applier) whiteout(dir, base string) error {
	if base == whOpaque {
		if a.opts.Ostree {
			var keep bool
			if dir, keep = ostreeMap(dir); !keep {
				return nil
			}
		}
		return a.opaque(dir)
	}
	if strings.HasPrefix(base, whMeta) {
		return nil // aufs metadata (.wh..wh.plnk, .wh..wh.aufs)
	}
	name := base[len(whPrefix):]
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("invalid whiteout %q", base)
	}
	p := joinPath(dir, name)
	if a.opts.Ostree {
		var keep bool
		if p, keep = ostreeMap(p); !keep {
			return nil
		}
	}
	pdir, pbase := splitPath(p)
	a.dirs.invalidate()
	fd, err := openInRoot(a.rootFd, pdir, unix.O_RDONLY|unix.O_DIRECTORY)
	if err == unix.ENOENT || err == unix.ENOTDIR {
		return nil // nothing below to remove
	}
	if err != nil {
		return fmt.Errorf("opening /%s: %w", pdir, err)
	}
	defer unix.Close(fd)
	return a.removeLower(fd, p, pbase)
}

func (a *Applier) opaque(dir string) error {
	a.dirs.invalidate()
	fd, err := openInRoot(a.rootFd, dir, unix.O_RDONLY|unix.O_DIRECTORY)
	if err == unix.ENOENT || err == unix.ENOTDIR {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening /%s: %w", dir, err)
	}
	defer unix.Close(fd)
	return a.removeLowerChildren(fd, dir)
}

// removeLower removes what lower layers left at p (named base in dirfd),
// sparing what the current layer created there.
func (a *Applier) removeLower(dirfd int, p, base string) error {
	f := a.layerPaths[p]
	switch {
	case f == 0:
		if err := removeTree(dirfd, base); err != nil {
			return fmt.Errorf("removing /%s: %w", p, err)
		}
		return nil
	case f&pathCreated != 0 && f&pathDir == 0:
		return nil // replaced by this layer already
	}
	fd, err := unix.Openat(dirfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT || err == unix.ENOTDIR || err == unix.ELOOP {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening /%s: %w", p, err)
	}
	defer unix.Close(fd)
	return a.removeLowerChildren(fd, p)
}

func (a *Applier) removeLowerChildren(fd int, p string) error {
	names, err := readNames(fd)
	if err != nil {
		return fmt.Errorf("listing /%s: %w", p, err)
	}
	for _, n := range names {
		if err := a.removeLower(fd, joinPath(p, n), n); err != nil {
			return err
		}
	}
	return nil
}
