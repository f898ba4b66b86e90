package install

import (
	"context"
	"os"
	"runtime"
	"strings"

	"github.com/bootlace/bootlace/internal/installconfig"
)

// PrintConfiguration reads the merged install configuration of the source
// image, streaming only its configuration files into a scratch directory.
func PrintConfiguration(ctx context.Context, opts Options, all bool) ([]byte, error) {
	r := newRun("print-configuration", opts)
	defer r.stack.Unwind()
	src, err := r.openSource(ctx, "")
	if err != nil {
		return nil, err
	}
	defer src.Close()
	dir, err := os.MkdirTemp(opts.WorkDir, "bootlace-config-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if _, err := extractFiltered(ctx, src, dir, configOnly); err != nil {
		return nil, err
	}
	cfg, _, err := installconfig.Load(dir, runtime.GOARCH)
	if err != nil {
		return nil, err
	}
	return cfg.JSON(all)
}

// configOnly keeps the image's configuration files and nothing else.
func configOnly(name string) bool {
	if !strings.Contains(name, "/") {
		return true
	}
	for _, p := range bootstrapConfig {
		if name == p || strings.HasPrefix(name, p+"/") {
			return true
		}
	}
	return false
}
