package grub

import (
	"strings"

	"github.com/bootlace/bootlace/internal/imagetree"
)

func existsInRoot(root, path string) bool { return imagetree.IsRegular(root, path) }

func readFileInRoot(root, path string, limit int64) ([]byte, error) {
	return imagetree.ReadFile(root, path, limit)
}

// listModules returns the module names (without .mod) in dir inside root.
func listModules(root, dir string) (map[string]bool, error) {
	names, err := imagetree.ReadDirNames(root, dir)
	if err != nil {
		return nil, err
	}
	mods := make(map[string]bool, len(names))
	for _, n := range names {
		if m, ok := strings.CutSuffix(n, ".mod"); ok {
			mods[m] = true
		}
	}
	return mods, nil
}
