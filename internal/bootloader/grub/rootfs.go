package grub

import (
	"fmt"
	"github.com/bootlace/bootlace/internal/imagetree"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

func openInRoot(root, path string, flags int) (*os.File, error) {
	return imagetree.Open(root, path, flags)
}

func existsInRoot(root, path string) bool { return imagetree.IsRegular(root, path) }

func readFileInRoot(root, path string, limit int64) ([]byte, error) {
	return imagetree.ReadFile(root, path, limit)
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
