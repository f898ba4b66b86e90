package layer

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// dirEnt is an open directory inside the root, with what file creation in
// it inherits: a setgid directory hands its group to new entries.
type dirEnt struct {
	path   string
	fd     int
	setgid bool
	gid    uint32
}

// dirCacheSize is small on purpose: tar streams visit directories
// depth-first, so a handful of recent directories serves nearly every entry.
const dirCacheSize = 8

// dirCache keeps recently used directory descriptors. Its entries are only
// valid until the next invalidate; callers must not hold a dirEnt across an
// operation that removes or replaces a directory or a symlink.
type dirCache struct {
	ents [dirCacheSize]dirEnt
	n    int
	next int
}

func (c *dirCache) get(p string) (dirEnt, bool) {
	for i := 0; i < c.n; i++ {
		if c.ents[i].path == p {
			return c.ents[i], true
		}
	}
	return dirEnt{}, false
}

func (c *dirCache) put(d dirEnt) {
	if c.n < dirCacheSize {
		c.ents[c.n] = d
		c.n++
		return
	}
	unix.Close(c.ents[c.next].fd)
	c.ents[c.next] = d
	c.next = (c.next + 1) % dirCacheSize
}

func (c *dirCache) invalidate() {
	for i := 0; i < c.n; i++ {
		unix.Close(c.ents[i].fd)
	}
	c.n, c.next = 0, 0
}

// openInRoot opens p (clean, relative) with the kernel confining resolution
// to the tree below rootFd: "..", absolute symlinks and symlinks to "../.."
// all stay inside it.
func openInRoot(rootFd int, p string, flags uint64) (int, error) {
	if p == "" {
		p = "."
	}
	how := unix.OpenHow{
		Flags:   flags | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	for range 64 {
		fd, err := unix.Openat2(rootFd, p, &how)
		if err == unix.EAGAIN || err == unix.EINTR {
			// The kernel asks for a retry when a rename raced the lookup.
			continue
		}
		if err == unix.ENOSYS {
			return -1, errors.New("openat2 is not available: bootlace needs Linux 5.6 or later")
		}
		return fd, err
	}
	return -1, fmt.Errorf("opening %s: openat2 kept returning EAGAIN", p)
}

// readNames lists a directory's entries, without "." and "..".
func readNames(fd int) ([]string, error) {
	buf := make([]byte, 16<<10)
	var names []string
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

// removeTree removes name in dirfd and, if it is a directory, everything
// below it, never following symlinks.
func removeTree(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR {
		return err
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	names, err := readNames(fd)
	if err == nil {
		for _, n := range names {
			if err = removeTree(fd, n); err != nil {
				break
			}
		}
	}
	unix.Close(fd)
	if err != nil {
		return err
	}
	err = unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
	if err == unix.ENOENT {
		return nil
	}
	return err
}

// writeAll writes b to fd, retrying short writes and EINTR.
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return unix.EIO
		}
		b = b[n:]
	}
	return nil
}

// processUmask reads the umask without changing it (unix.Umask can only
// read by writing, which would race with other goroutines creating files).
// When it cannot be read, every permission bit is assumed masked so modes
// are always set explicitly.
func processUmask() uint32 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0o777
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			if err != nil {
				return 0o777
			}
			return uint32(m) & 0o777
		}
	}
	return 0o777
}

// targetErrno reports errors caused by the target filesystem rather than by
// the layer's content.
func targetErrno(err error) bool {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case unix.ENOSPC, unix.EDQUOT, unix.EROFS, unix.EIO, unix.ENOMEM, unix.EMFILE, unix.ENFILE, unix.EFBIG:
		return true
	}
	return false
}
