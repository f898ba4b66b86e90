// Package mount wraps the mount system calls bootlace needs and reads the
// mount table, so phases neither shell out to mount(8) nor parse its output.
package mount

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Mount mounts src on target with fstype and options data.
func Mount(src, target, fstype string, flags uintptr, data string) error {
	if err := unix.Mount(src, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mounting %s on %s (%s): %w", src, target, fstype, err)
	}
	return nil
}

// Unmount unmounts target, retrying briefly while it is busy (a sandbox
// process may still be exiting).
func Unmount(target string) error {
	var err error
	for i := 0; i < 50; i++ {
		err = unix.Unmount(target, 0)
		if err == nil || err == unix.EINVAL || err == unix.ENOENT {
			return nil
		}
		if err != unix.EBUSY {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("unmounting %s: %w", target, err)
}

// Info is one line of /proc/self/mountinfo.
type Info struct {
	ID, Parent int
	Major      uint32
	Minor      uint32
	Root       string
	Target     string
	Options    string
	FSType     string
	Source     string
	SuperOpts  string
}

// Table parses a mountinfo file (e.g. /proc/self/mountinfo).
func Table(path string) ([]Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading mount table %s: %w", path, err)
	}
	defer f.Close()
	var out []Info
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if in, ok := parseLine(sc.Text()); ok {
			out = append(out, in)
		}
	}
	return out, sc.Err()
}

func parseLine(line string) (Info, bool) {
	pre, post, ok := strings.Cut(line, " - ")
	if !ok {
		return Info{}, false
	}
	f := strings.Fields(pre)
	g := strings.Fields(post)
	if len(f) < 6 || len(g) < 2 {
		return Info{}, false
	}
	var in Info
	fmt.Sscanf(f[0], "%d", &in.ID)
	fmt.Sscanf(f[1], "%d", &in.Parent)
	fmt.Sscanf(f[2], "%d:%d", &in.Major, &in.Minor)
	in.Root = unescape(f[3])
	in.Target = unescape(f[4])
	in.Options = f[5]
	in.FSType = g[0]
	in.Source = unescape(g[1])
	if len(g) > 2 {
		in.SuperOpts = g[2]
	}
	return in, true
}

// unescape decodes mountinfo's octal escapes (\040 for space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Find returns the mount whose target is path (the last one mounted there).
func Find(path string) (*Info, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	tab, err := Table("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var found *Info
	for i := range tab {
		if tab[i].Target == abs {
			found = &tab[i]
		}
	}
	return found, nil
}

// IsMountpoint reports whether path is the target of a mount.
func IsMountpoint(path string) (bool, error) {
	m, err := Find(path)
	return m != nil, err
}

// Under lists the mounts strictly below dir, deepest first, so callers can
// unmount them in order.
func Under(dir string) ([]Info, error) {
	tab, err := Table("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	prefix := strings.TrimSuffix(dir, "/") + "/"
	var out []Info
	for i := len(tab) - 1; i >= 0; i-- {
		if strings.HasPrefix(tab[i].Target, prefix) {
			out = append(out, tab[i])
		}
	}
	return out, nil
}
