package ostreecommit

import (
	"bytes"
	"errors"

	"golang.org/x/sys/unix"
)

// readXattrs returns the extended attributes the way ostree's commit
// reads them from disk (libglnx): every name the kernel lists, except
// those with a zero-length value, which ostree skips. list and get are
// flistxattr/fgetxattr for a file descriptor or llistxattr/lgetxattr for
// a symlink path. A filesystem without xattr support yields none.
func readXattrs(list func([]byte) (int, error), get func(name string, buf []byte) (int, error)) ([]xattr, error) {
	var small [256]byte
	buf := small[:]
	var n int
	for {
		var err error
		n, err = list(buf)
		if err == nil {
			break
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if !errors.Is(err, unix.ERANGE) {
			return nil, err
		}
		size, err := list(nil)
		if err != nil {
			return nil, err
		}
		buf = make([]byte, size+64)
	}
	if n == 0 {
		return nil, nil
	}
	var out []xattr
	vbuf := make([]byte, 256)
	for _, raw := range bytes.Split(buf[:n], []byte{0}) {
		if len(raw) == 0 {
			continue
		}
		name := string(raw)
		for {
			m, err := get(name, vbuf)
			if err == nil {
				if m > 0 {
					out = append(out, xattr{name: name, value: bytes.Clone(vbuf[:m])})
				}
				break
			}
			if errors.Is(err, unix.ENODATA) {
				break // removed since the listing
			}
			if !errors.Is(err, unix.ERANGE) {
				return nil, err
			}
			size, err := get(name, nil)
			if err != nil {
				return nil, err
			}
			vbuf = make([]byte, size+64)
		}
	}
	return out, nil
}

func fdXattrs(fd int) ([]xattr, error) {
	return readXattrs(
		func(b []byte) (int, error) { return unix.Flistxattr(fd, b) },
		func(name string, b []byte) (int, error) { return unix.Fgetxattr(fd, name, b) })
}

func linkXattrs(path string) ([]xattr, error) {
	return readXattrs(
		func(b []byte) (int, error) { return unix.Llistxattr(path, b) },
		func(name string, b []byte) (int, error) { return unix.Lgetxattr(path, name, b) })
}
