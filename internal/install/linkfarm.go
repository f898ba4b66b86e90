package install

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// linkFarm mirrors the top level of tree and its usr/ into dst with hard
// links (directories recreated, symlinks copied). The commit moves the
// staged files into the repository and deletes the stage, so the image's
// ostree must run from a view that survives it; hard links cost one system
// call per file and no data, and one more to remove, so the view leaves out
// what a C program and its libraries never read (toolViewSkip).
func linkFarm(tree, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("creating tool view %s: %w", dst, err)
	}
	ents, err := os.ReadDir(tree)
	if err != nil {
		return fmt.Errorf("reading %s: %w", tree, err)
	}
	for _, e := range ents {
		src := filepath.Join(tree, e.Name())
		if e.Type()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(src)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, filepath.Join(dst, e.Name())); err != nil {
				return fmt.Errorf("linking tool view: %w", err)
			}
		}
	}
	usr := filepath.Join(tree, "usr")
	return filepath.WalkDir(usr, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(tree, p)
		out := filepath.Join(dst, rel)
		switch {
		case d.IsDir() && toolViewSkip(rel):
			return filepath.SkipDir
		case d.IsDir():
			return os.Mkdir(out, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(target, out)
		case d.Type().IsRegular():
			return os.Link(p, out)
		}
		return nil
	})
}

// toolViewSkip reports whether the directory rel (relative to the tree)
// stays out of the tool view: headers, sources, documentation and other
// shared data, kernel modules and interpreter libraries. On a package-heavy
// image they are most of the files (52k of 59k on the bench image), and
// ostree reads none of them; usr/share/ostree is kept.
func toolViewSkip(rel string) bool {
	switch rel {
	case "usr/include", "usr/src", "usr/lib/modules", "usr/lib/firmware", "usr/local/include", "usr/local/src":
		return true
	}
	if dir, base := filepath.Split(rel); dir == "usr/share/" {
		return base != "ostree"
	} else if dir == "usr/lib/" {
		return strings.HasPrefix(base, "python") || strings.HasPrefix(base, "perl") || base == "gcc" || base == "go"
	}
	return false
}
