package sandbox

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNotFound matches (errors.Is) the error Run returns when the command is
// not in the image, so callers can add a hint naming the package to ship.
var ErrNotFound = errors.New("command not found in the image")

// NotFoundError says which command is missing from which image.
type NotFoundError struct {
	Command string
	Root    string // host path of the image
	Path    string // the PATH searched, empty for a command given as a path
}

func (e *NotFoundError) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("%s not found in the image at %s", e.Command, e.Root)
	}
	return fmt.Sprintf("%s not found in the image at %s (searched PATH=%s)", e.Command, e.Root, e.Path)
}

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// LookPath finds name the way the sandboxed command would see it: in the
// directories of pathList (colon separated, paths inside the image) below
// root, following symlinks as if root were "/". A name containing a slash is
// taken as a path inside the image, relative to dir when not absolute. It
// returns the path inside the image, not the host path.
func LookPath(root, name, pathList, dir string) (string, error) {
	if name == "" {
		return "", errors.New("looking up command: empty name")
	}
	if strings.Contains(name, "/") {
		p := name
		if !path.IsAbs(p) {
			p = path.Join("/", dir, p)
		}
		if err := checkExecutable(root, p); err != nil {
			if errors.Is(err, ErrNotFound) {
				return "", &NotFoundError{Command: name, Root: root}
			}
			return "", err
		}
		return path.Clean(p), nil
	}
	for _, d := range strings.Split(pathList, ":") {
		if d == "" || !path.IsAbs(d) {
			// A relative PATH entry depends on the working directory; the
			// sandbox never uses one.
			continue
		}
		p := path.Join(d, name)
		err := checkExecutable(root, p)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return "", err
		}
	}
	return "", &NotFoundError{Command: name, Root: root, Path: pathList}
}

// checkExecutable reports ErrNotFound unless p, resolved inside root, is an
// executable regular file that the sandbox will show (directories replaced
// by fresh mounts are not).
func checkExecutable(root, p string) error {
	first, _, _ := strings.Cut(strings.TrimPrefix(path.Clean(p), "/"), "/")
	if isReplaced(first) {
		return ErrNotFound
	}
	rootFD, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening image root %s: %w", root, err)
	}
	defer unix.Close(rootFD)
	fd, err := unix.Openat2(rootFD, p, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			return ErrNotFound
		}
		return fmt.Errorf("looking up %s in the image at %s: %w", p, root, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("looking up %s in the image at %s: %w", p, root, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Mode&0o111 == 0 {
		return ErrNotFound
	}
	return nil
}
