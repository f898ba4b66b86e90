package ostreecommit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// Options describe the commit. They mirror the ostree commit flags
// bootlace uses: --branch, --subject, --body, --add-metadata-string (in
// order) and --timestamp, with --consume --no-bindings --fsync=false
// always implied.
type Options struct {
	// Branch is the ref to create or move (refs/heads/Branch). If it
	// already points at a commit, that commit becomes the parent, as
	// with ostree commit --branch.
	Branch  string
	Subject string
	Body    string
	// Metadata are string entries of the commit's a{sv} metadata, kept
	// in this order (ostree keeps --add-metadata-string order).
	Metadata []KV
	// Timestamp is the commit time; the zero value means now. Only
	// whole seconds are recorded.
	Timestamp time.Time
	// Workers is the number of files hashed in parallel; 0 means
	// GOMAXPROCS.
	Workers int
	// Known, if set, holds checksums computed while the tree was
	// written; files it vouches for are not read again.
	Known *Known
	// Progress, if set, is called from a single goroutine a few times a
	// second and once at the end with the files and content bytes
	// committed so far.
	Progress func(files, bytes int64)
}

// refPattern is ostree_validate_rev's rule for ref names.
var refPattern = regexp.MustCompile(`^(?:[\w\d][-._\w\d]*/)*[\w\d][-._\w\d]*$`)

// Commit writes the directory tree as a commit into the bare repository
// repo, consuming the tree, and returns the commit checksum. See the
// package documentation for what it matches of ostree commit.
func Commit(ctx context.Context, repo, tree string, opts Options) (string, error) {
	if err := validateOptions(&opts); err != nil {
		return "", err
	}
	if err := checkBareRepo(repo); err != nil {
		return "", err
	}
	unlock, err := lockRepo(repo)
	if err != nil {
		return "", err
	}
	defer unlock()

	var rootSt, objSt unix.Stat_t
	if err := unix.Lstat(tree, &rootSt); err != nil {
		return "", fmt.Errorf("ostree commit: reading tree %s: %w", tree, err)
	}
	if rootSt.Mode&unix.S_IFMT != unix.S_IFDIR {
		return "", fmt.Errorf("ostree commit: tree %s is not a directory", tree)
	}
	objects := filepath.Join(repo, "objects")
	if err := unix.Stat(objects, &objSt); err != nil {
		return "", fmt.Errorf("ostree commit: reading repository objects %s: %w", objects, err)
	}
	if rootSt.Dev != objSt.Dev {
		// Consuming links files into the repository; across
		// filesystems that would be a copy, which this writer does not do.
		return "", fmt.Errorf("ostree commit: tree %s and repository %s are on different filesystems; stage the tree on the repository's filesystem", tree, repo)
	}
	if err := checkDisjoint(repo, tree); err != nil {
		return "", err
	}
	parent, err := readRef(repo, opts.Branch)
	if err != nil {
		return "", err
	}

	// Temporary files live in the repository's tmp/ (as ostree's do):
	// a leftover there is ignored, one under refs/ would read as a ref.
	tmpDir := filepath.Join(repo, "tmp")
	if err := os.MkdirAll(tmpDir, 0o755); err != nil {
		return "", fmt.Errorf("ostree commit: creating %s: %w", tmpDir, err)
	}
	w := &writer{objects: objects, tmp: tmpDir, dev: rootSt.Dev, metaSeen: map[[32]byte]bool{}, known: opts.Known}
	root, err := w.walkAndHash(ctx, tree, opts)
	if err != nil {
		return "", err
	}
	rootTree, err := w.writeTrees(root)
	if err != nil {
		return "", err
	}
	// Like ostree commit --consume, the tree is removed; only empty
	// directories are left at this point, so rmdir is enough and never
	// descends into anything unexpected.
	if err := removeDirs(root); err != nil {
		return "", err
	}
	ts := opts.Timestamp
	if ts.IsZero() {
		ts = time.Now()
	}
	c := commitObject(opts.Metadata, parent, opts.Subject, opts.Body, uint64(ts.Unix()), rootTree, root.metaSum)
	csum := sum(c)
	if err := w.writeObject(csum, "commit", c); err != nil {
		return "", err
	}
	hexsum := hex.EncodeToString(csum[:])
	if err := writeRef(repo, tmpDir, opts.Branch, hexsum); err != nil {
		return "", err
	}
	return hexsum, nil
}

// checkDisjoint refuses a tree that contains the repository or lies
// inside it: consuming would move the repository into itself.
func checkDisjoint(repo, tree string) error {
	r, err := filepath.EvalSymlinks(repo)
	if err == nil {
		r, err = filepath.Abs(r)
	}
	t, err2 := filepath.EvalSymlinks(tree)
	if err2 == nil {
		t, err2 = filepath.Abs(t)
	}
	if err := errors.Join(err, err2); err != nil {
		return fmt.Errorf("ostree commit: resolving paths: %w", err)
	}
	within := func(a, b string) bool { return a == b || strings.HasPrefix(a, b+string(filepath.Separator)) }
	if within(r, t) || within(t, r) {
		return fmt.Errorf("ostree commit: tree %s and repository %s overlap; stage the tree beside the repository", tree, repo)
	}
	return nil
}

func validateOptions(o *Options) error {
	if !refPattern.MatchString(o.Branch) {
		return fmt.Errorf("ostree commit: invalid ref name %q", o.Branch)
	}
	for _, s := range []string{o.Subject, o.Body} {
		if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
			return errors.New("ostree commit: subject and body must be UTF-8 without NUL")
		}
	}
	for _, kv := range o.Metadata {
		if kv.Key == "" || !utf8.ValidString(kv.Key) || !utf8.ValidString(kv.Value) ||
			strings.IndexByte(kv.Key, 0) >= 0 || strings.IndexByte(kv.Value, 0) >= 0 {
			return fmt.Errorf("ostree commit: invalid metadata entry %q: keys must be non-empty, keys and values UTF-8 without NUL", kv.Key)
		}
	}
	if !o.Timestamp.IsZero() && o.Timestamp.Unix() < 0 {
		return fmt.Errorf("ostree commit: timestamp %s is before 1970", o.Timestamp)
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	return nil
}

// checkBareRepo requires [core] mode=bare (ostree's default when unset):
// other modes store content differently.
func checkBareRepo(repo string) error {
	path := filepath.Join(repo, "config")
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("ostree commit: reading repository config %s: %w", path, err)
	}
	mode, section := "bare", ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok && section == "[core]" && strings.TrimSpace(k) == "mode" {
			mode = strings.TrimSpace(v)
		}
	}
	if mode != "bare" {
		return fmt.Errorf("ostree commit: repository %s has mode %q; only bare repositories are supported", repo, mode)
	}
	return nil
}

// lockRepo takes the shared repository lock that ostree holds during a
// transaction (flock on .lock), so that a concurrent prune waits.
func lockRepo(repo string) (func(), error) {
	path := filepath.Join(repo, ".lock")
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o640)
	if err != nil {
		return nil, fmt.Errorf("ostree commit: opening repository lock %s: %w", path, err)
	}
	if err := unix.Flock(fd, unix.LOCK_SH); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("ostree commit: locking repository %s: %w", path, err)
	}
	return func() { unix.Close(fd) }, nil
}

func readRef(repo, ref string) ([]byte, error) {
	path := filepath.Join(repo, "refs", "heads", ref)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ostree commit: reading ref %s: %w", path, err)
	}
	parent, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(parent) != 32 {
		return nil, fmt.Errorf("ostree commit: ref %s does not hold a checksum", path)
	}
	return parent, nil
}

func writeRef(repo, tmpDir, ref, csum string) error {
	path := filepath.Join(repo, "refs", "heads", ref)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("ostree commit: creating ref directory for %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(tmpDir, "bootlace-ref-")
	if err != nil {
		return fmt.Errorf("ostree commit: writing ref %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(csum + "\n")
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("ostree commit: writing ref %s: %w", path, err)
	}
	return nil
}

// dirNode is one directory of the tree while it is committed. File
// checksums are filled in by the hashing workers.
type dirNode struct {
	path    string
	metaSum [32]byte
	files   []fileEntry
	dirs    []dirEntry
	subdirs []*dirNode // parallel to dirs
}

type fileJob struct {
	path    string
	symlink bool
	out     *[32]byte
}

type writer struct {
	objects, tmp string
	dev          uint64
	fanout       [256]atomic.Bool
	metaSeen     map[[32]byte]bool // metadata objects known to exist; walker goroutine only
	files, bytes atomic.Int64
	known        *Known
}

// walkAndHash walks the tree on one goroutine, writing dirmeta objects,
// and hands regular files and symlinks to a pool of workers that hash
// and adopt them into the repository.
func (w *writer) walkAndHash(ctx context.Context, tree string, opts Options) (*dirNode, error) {
	g, gctx := errgroup.WithContext(ctx)
	jobs := make(chan fileJob, opts.Workers*64)
	var root *dirNode
	g.Go(func() error {
		defer close(jobs)
		var err error
		root, err = w.walk(gctx, tree, jobs)
		return err
	})
	for range opts.Workers {
		g.Go(func() error {
			buf := make([]byte, 256<<10)
			for j := range jobs {
				if err := gctx.Err(); err != nil {
					return err
				}
				if err := w.commitFile(gctx, j, buf); err != nil {
					return err
				}
			}
			return nil
		})
	}
	stop := w.reportProgress(opts.Progress)
	err := g.Wait()
	stop()
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil && errors.Is(err, ctxErr) {
			return nil, fmt.Errorf("ostree commit of %s interrupted: %w", tree, ctxErr)
		}
		return nil, err
	}
	return root, nil
}

func (w *writer) reportProgress(fn func(files, bytes int64)) (stop func()) {
	if fn == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				fn(w.files.Load(), w.bytes.Load())
				return
			case <-t.C:
				fn(w.files.Load(), w.bytes.Load())
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func (w *writer) walk(ctx context.Context, path string, jobs chan<- fileJob) (*dirNode, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("ostree commit: opening directory %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	node, err := w.readDir(f, path)
	f.Close()
	if err != nil {
		return nil, err
	}
	for i := range node.files {
		j := fileJob{path: filepath.Join(path, node.files[i].name), symlink: node.files[i].symlink, out: &node.files[i].sum}
		select {
		case jobs <- j:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	node.subdirs = make([]*dirNode, len(node.dirs))
	for i := range node.dirs {
		child, err := w.walk(ctx, filepath.Join(path, node.dirs[i].name), jobs)
		if err != nil {
			return nil, err
		}
		node.subdirs[i] = child
		node.dirs[i].metaSum = child.metaSum
	}
	return node, nil
}

// readDir reads one directory's metadata (writing its dirmeta object)
// and entries.
func (w *writer) readDir(f *os.File, path string) (*dirNode, error) {
	fd := int(f.Fd())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("ostree commit: reading directory %s: %w", path, err)
	}
	if st.Dev != w.dev {
		return nil, fmt.Errorf("ostree commit: %s is on another filesystem (a mount point inside the tree); unmount it first", path)
	}
	xs, err := fdXattrs(fd)
	if err != nil {
		return nil, fmt.Errorf("ostree commit: reading xattrs of %s: %w", path, err)
	}
	meta := dirMeta(st.Uid, st.Gid, st.Mode, xs)
	node := &dirNode{path: path, metaSum: sum(meta)}
	if !w.metaSeen[node.metaSum] {
		if err := w.writeObject(node.metaSum, "dirmeta", meta); err != nil {
			return nil, err
		}
		w.metaSeen[node.metaSum] = true
	}
	ents, err := f.ReadDir(-1)
	if err != nil {
		return nil, fmt.Errorf("ostree commit: listing directory %s: %w", path, err)
	}
	for _, e := range ents {
		name := e.Name()
		if !validName(name) {
			return nil, fmt.Errorf("ostree commit: %s: file name %q is not valid UTF-8; ostree cannot store it", path, name)
		}
		switch t := e.Type(); {
		case t.IsDir():
			node.dirs = append(node.dirs, dirEntry{name: name})
		case t.IsRegular():
			node.files = append(node.files, fileEntry{name: name})
		case t&os.ModeSymlink != 0:
			node.files = append(node.files, fileEntry{name: name, symlink: true})
		default:
			return nil, fmt.Errorf("ostree commit: %s: unsupported file type %s (ostree stores only regular files, symlinks and directories)", filepath.Join(path, name), t)
		}
	}
	return node, nil
}

// commitFile hashes one regular file or symlink as an ostree content
// object and adopts it: link into objects/ if absent, then unlink.
func (w *writer) commitFile(ctx context.Context, j fileJob, buf []byte) error {
	var sum [32]byte
	var size int64
	var err error
	if j.symlink {
		sum, err = hashSymlink(j.path)
	} else {
		sum, size, err = hashRegular(ctx, j.path, buf, w.known)
	}
	if err != nil {
		return err
	}
	if err := w.adopt(j.path, sum); err != nil {
		return err
	}
	*j.out = sum
	w.files.Add(1)
	w.bytes.Add(size)
	return nil
}

func hashRegular(ctx context.Context, path string, buf []byte, known *Known) (sum [32]byte, size int64, err error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return sum, 0, fmt.Errorf("ostree commit: opening %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return sum, 0, fmt.Errorf("ostree commit: reading %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return sum, 0, fmt.Errorf("ostree commit: %s changed type during the commit", path)
	}
	xs, err := fdXattrs(fd)
	if err != nil {
		return sum, 0, fmt.Errorf("ostree commit: reading xattrs of %s: %w", path, err)
	}
	hdr := fileHeader(st.Uid, st.Gid, st.Mode, "", xs)
	if s, ok := known.lookup(&st, hdr); ok {
		return s, st.Size, nil
	}
	h := sha256.New()
	h.Write(hdr)
	_ = unix.Fadvise(fd, 0, 0, unix.FADV_SEQUENTIAL)
	for {
		n, rerr := f.Read(buf)
		h.Write(buf[:n])
		size += int64(n)
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return sum, 0, fmt.Errorf("ostree commit: reading %s: %w", path, rerr)
		}
		if size&(64<<20-1) < int64(n) { // about every 64 MiB
			if err := ctx.Err(); err != nil {
				return sum, 0, err
			}
		}
	}
	h.Sum(sum[:0])
	return sum, size, nil
}

func hashSymlink(path string) (sum [32]byte, err error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return sum, fmt.Errorf("ostree commit: reading %s: %w", path, err)
	}
	target, err := os.Readlink(path)
	if err != nil {
		return sum, fmt.Errorf("ostree commit: reading symlink %s: %w", path, err)
	}
	if !utf8.ValidString(target) {
		return sum, fmt.Errorf("ostree commit: symlink %s has a target that is not valid UTF-8; ostree cannot store it", path)
	}
	xs, err := linkXattrs(path)
	if err != nil {
		return sum, fmt.Errorf("ostree commit: reading xattrs of %s: %w", path, err)
	}
	return sha256.Sum256(fileHeader(st.Uid, st.Gid, st.Mode, target, xs)), nil
}

func (w *writer) objectPath(sum [32]byte, ext string) (string, error) {
	hx := hex.EncodeToString(sum[:])
	dir := filepath.Join(w.objects, hx[:2])
	if !w.fanout[sum[0]].Load() {
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("ostree commit: creating %s: %w", dir, err)
		}
		w.fanout[sum[0]].Store(true)
	}
	return filepath.Join(dir, hx[2:]+"."+ext), nil
}

// adopt moves the staged file into the repository as its content object,
// keeping the inode (owner, mode, xattrs and data stay as hashed): a hard
// link under the object's name, then the staged name goes. If the object
// exists (duplicate content, or a hard link already adopted under another
// name) only the staged name goes. Link and unlink rather than rename:
// the kernel serializes renames across directories on a filesystem, and
// adoption is the commit's bulk of work.
func (w *writer) adopt(path string, sum [32]byte) error {
	obj, err := w.objectPath(sum, "file")
	if err != nil {
		return err
	}
	err = unix.Linkat(unix.AT_FDCWD, path, unix.AT_FDCWD, obj, 0)
	switch {
	case err == nil, errors.Is(err, unix.EEXIST):
	case errors.Is(err, unix.EXDEV):
		return fmt.Errorf("ostree commit: %s is not on the repository's filesystem: %w", path, err)
	default:
		return fmt.Errorf("ostree commit: moving %s into the repository as %s: %w", path, obj, err)
	}
	if err := unix.Unlink(path); err != nil {
		return fmt.Errorf("ostree commit: removing consumed %s: %w", path, err)
	}
	return nil
}

// writeTrees writes the dirtree objects bottom-up and returns the root's.
func (w *writer) writeTrees(n *dirNode) ([32]byte, error) {
	for i, child := range n.subdirs {
		s, err := w.writeTrees(child)
		if err != nil {
			return s, err
		}
		n.dirs[i].treeSum = s
	}
	// dirTree sorts files and dirs in place; subdirs is only used for
	// removal from here on, so it need not follow.
	data := dirTree(n.files, n.dirs)
	s := sum(data)
	if !w.metaSeen[s] {
		if err := w.writeObject(s, "dirtree", data); err != nil {
			return s, err
		}
		w.metaSeen[s] = true
	}
	return s, nil
}

// writeObject writes a metadata object (0644, like ostree) unless it
// already exists, through a temporary file so that a reader never sees a
// partial object.
func (w *writer) writeObject(s [32]byte, ext string, data []byte) error {
	obj, err := w.objectPath(s, ext)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(obj); err == nil {
		return nil
	}
	tmp, err := os.CreateTemp(w.tmp, "bootlace-obj-")
	if err != nil {
		return fmt.Errorf("ostree commit: writing %s: %w", obj, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat2(unix.AT_FDCWD, tmp.Name(), unix.AT_FDCWD, obj, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EINVAL) {
			err = os.Rename(tmp.Name(), obj)
		}
		if errors.Is(err, unix.EEXIST) {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("ostree commit: writing %s: %w", obj, err)
	}
	return nil
}

// removeDirs removes the consumed tree's directories, deepest first.
func removeDirs(n *dirNode) error {
	for _, c := range n.subdirs {
		if err := removeDirs(c); err != nil {
			return err
		}
	}
	if err := unix.Rmdir(n.path); err != nil {
		return fmt.Errorf("ostree commit: removing consumed directory %s: %w", n.path, err)
	}
	return nil
}
