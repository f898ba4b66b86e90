package layer

import (
	"errors"
	"fmt"
	"strings"
)

const (
	maxComponent = 255  // NAME_MAX
	maxPath      = 4096 // PATH_MAX
)

// cleanName turns a tar entry name ("./usr/bin/x", "usr/bin/x",
// "/usr/bin/x", "usr//bin/./x/") into a root-relative path without leading
// or trailing slashes; "" is the root itself. It refuses names that no
// legitimate layer contains: NUL bytes, ".." components and over-long names.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", errors.New("empty entry name")
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", errors.New("entry name contains a NUL byte")
	}
	if len(name) > maxPath {
		return "", fmt.Errorf("entry name is %d bytes long, over the %d-byte path limit", len(name), maxPath)
	}
	var b strings.Builder
	b.Grow(len(name))
	rest := name
	for rest != "" {
		var comp string
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			comp, rest = rest[:i], rest[i+1:]
		} else {
			comp, rest = rest, ""
		}
		switch comp {
		case "", ".":
			continue
		case "..":
			return "", errors.New(`entry name contains a ".." component`)
		}
		if len(comp) > maxComponent {
			return "", fmt.Errorf("entry name has a %d-byte component, over the %d-byte limit", len(comp), maxComponent)
		}
		if b.Len() > 0 {
			b.WriteByte('/')
		}
		b.WriteString(comp)
	}
	return b.String(), nil
}

// splitPath returns the parent ("" for the root) and last component of a
// clean relative path.
func splitPath(p string) (dir, base string) {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i], p[i+1:]
	}
	return "", p
}

func joinPath(dir, base string) string {
	if dir == "" {
		return base
	}
	return dir + "/" + base
}

// ostreeMap applies bootc's ostree conventions to a clean path: etc moves to
// usr/etc, and the contents of the API filesystems and scratch directories
// (run, tmp, proc, sys, dev) are dropped while the directories themselves are
// kept. keep is false when the entry must be dropped.
func ostreeMap(p string) (mapped string, keep bool) {
	first, rest, nested := strings.Cut(p, "/")
	switch first {
	case "etc":
		if nested {
			return "usr/etc/" + rest, true
		}
		return "usr/etc", true
	case "run", "tmp", "proc", "sys", "dev":
		return p, !nested
	}
	return p, true
}
