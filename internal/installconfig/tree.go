package installconfig

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
)

// maxLinks bounds symlink expansion, as the kernel's ELOOP limit does.
const maxLinks = 40

// maxFileSize caps how much of a configuration file is read, so a hostile
// image cannot make the installer allocate without bound.
const maxFileSize = 1 << 20

// errNotRegular reports a configuration path that resolves to something
// other than a regular file (a directory, a device, a FIFO).
var errNotRegular = errors.New("not a regular file")

// tree reads files of an image tree staged on the host. Symlinks are
// resolved as if the tree were "/" (an absolute target restarts at the tree
// root and ".." stops there), the way the image sees itself once booted. The
// os.Root underneath refuses any escape, so even a resolver bug cannot read
// host files.
type tree struct {
	root *os.Root
}

func openTree(dir string) (*tree, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening image tree %s: %w", dir, err)
	}
	return &tree{root: r}, nil
}

func (t *tree) Close() error { return t.root.Close() }

// resolve returns name, relative to the tree root, with every symlink
// expanded inside the tree. A missing component yields an fs.ErrNotExist
// error.
func (t *tree) resolve(name string) (string, error) {
	pending := splitPath(name)
	var done []string
	links := 0
	for len(pending) > 0 {
		c := pending[0]
		pending = pending[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(done) > 0 {
				done = done[:len(done)-1]
			}
			continue
		}
		cand := path.Join(append(done, c)...)
		fi, err := t.root.Lstat(cand)
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			done = append(done, c)
			continue
		}
		links++
		if links > maxLinks {
			return "", &fs.PathError{Op: "resolve", Path: name, Err: syscall.ELOOP}
		}
		target, err := t.root.Readlink(cand)
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			done = done[:0]
		}
		pending = append(splitPath(target), pending...)
	}
	if len(done) == 0 {
		return ".", nil
	}
	return path.Join(done...), nil
}

func splitPath(p string) []string {
	return strings.Split(p, "/")
}

// readFile reads a regular file of at most maxFileSize bytes.
func (t *tree) readFile(name string) ([]byte, error) {
	rel, err := t.resolve(name)
	if err != nil {
		return nil, err
	}
	f, err := t.root.Open(rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "read", Path: name, Err: errNotRegular}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileSize {
		return nil, &fs.PathError{Op: "read", Path: name, Err: fmt.Errorf("larger than %d bytes", maxFileSize)}
	}
	return data, nil
}

// readDirNames lists a directory, sorted by name.
func (t *tree) readDirNames(name string) ([]string, error) {
	rel, err := t.resolve(name)
	if err != nil {
		return nil, err
	}
	f, err := t.root.Open(rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	return names, nil
}

// isDir reports whether name resolves to a directory inside the tree.
func (t *tree) isDir(name string) (bool, error) {
	rel, err := t.resolve(name)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	fi, err := t.root.Stat(rel)
	if err != nil {
		return false, err
	}
	return fi.IsDir(), nil
}

// isMasked reports whether name is a symlink to /dev/null, which masks a
// drop-in of the same name in a lower-priority directory (systemd style).
func (t *tree) isMasked(name string) bool {
	fi, err := t.root.Lstat(name)
	if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		return false
	}
	target, err := t.root.Readlink(name)
	return err == nil && path.Clean(target) == "/dev/null"
}

// notExist reports a missing path, also when a path component is not a
// directory.
func notExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

var errMissingKargs = errors.New(`missing key "kargs"`)
