package install

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// linkFarm mirrors the top level of tree and its usr/ into dst with hard
// links (directories recreated, symlinks copied). ostree commit --consume
// moves the staged files into the repository and deletes the stage, so the
// image's ostree must run from a view that survives it; hard links cost one
// system call per file and no data.
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
