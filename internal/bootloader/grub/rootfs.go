package grub

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// openInRoot opens path (absolute, inside the image tree) under root with
// every symlink resolved inside root, so an image cannot make us read a
// host file through an absolute or escaping link.
func openInRoot(root, path string, flags int) (*os.File, error) {
	dir, err := os.OpenFile(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	rel := strings.TrimLeft(filepath.Clean("/"+path), "/")
	if rel == "" {
		rel = "."
	}
	fd, err := unix.Openat2(int(dir.Fd()), rel, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: filepath.Join(root, path), Err: err}
	}
	return os.NewFile(uintptr(fd), filepath.Join(root, path)), nil
}

// existsInRoot reports whether path names a regular file inside root.
func existsInRoot(root, path string) bool {
	f, err := openInRoot(root, path, unix.O_PATH)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	return err == nil && fi.Mode().IsRegular()
}

// readFileInRoot reads a regular file inside root, at most limit bytes.
func readFileInRoot(root, path string, limit int64) ([]byte, error) {
	f, err := openInRoot(root, path, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", f.Name())
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", f.Name(), err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", f.Name(), limit)
	}
	return data, nil
}

// listModules returns the module names (without .mod) in dir inside root.
func listModules(root, dir string) (map[string]bool, error) {
	f, err := openInRoot(root, dir, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", f.Name(), err)
	}
	mods := make(map[string]bool, len(names))
	for _, n := range names {
		if m, ok := strings.CutSuffix(n, ".mod"); ok {
			mods[m] = true
		}
	}
	return mods, nil
}
