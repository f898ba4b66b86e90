package sandbox_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/bootlace/bootlace/internal/sandbox"
)

func TestLookPath(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"usr/bin", "usr/sbin/dir", "tmp", "opt/bin"} {
		must(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	write := func(p string, mode os.FileMode) {
		must(t, os.WriteFile(filepath.Join(root, p), []byte("#!/bin/sh\n"), mode))
	}
	link := func(target, p string) { must(t, os.Symlink(target, filepath.Join(root, p))) }
	write("usr/bin/tool", 0o755)
	write("usr/bin/plain", 0o644)
	write("tmp/tmptool", 0o755)
	link("usr/bin", "bin")
	link("/usr/bin/tool", "usr/sbin/abs")                      // absolute: resolved in the image
	link("../../../../../../../../usr/bin/tool", "opt/bin/up") // cannot climb out of the image
	link("/usr/local/go/bin/go", "usr/sbin/hostgo")            // exists on the host only
	link("dangling", "usr/sbin/broken")

	tests := []struct {
		name, cmd, path, dir string
		want                 string // "" means ErrNotFound
	}{
		{"on PATH", "tool", "/usr/sbin:/usr/bin", "/", "/usr/bin/tool"},
		{"PATH order", "tool", "/bin:/usr/bin", "/", "/bin/tool"},
		{"absolute link", "abs", "/usr/sbin", "/", "/usr/sbin/abs"},
		{"clamped link", "up", "/opt/bin", "/", "/opt/bin/up"},
		{"host-only target", "hostgo", "/usr/sbin", "/", ""},
		{"dangling", "broken", "/usr/sbin", "/", ""},
		{"not executable", "plain", "/usr/bin", "/", ""},
		{"directory", "dir", "/usr/sbin", "/", ""},
		{"relative PATH entry skipped", "tool", "usr/bin", "/", ""},
		{"replaced dir", "tmptool", "/tmp", "/", ""},
		{"absolute name", "/usr/bin/tool", "", "/", "/usr/bin/tool"},
		{"relative name", "./tool", "", "/usr/bin", "/usr/bin/tool"},
		{"missing name", "/usr/bin/none", "/usr/bin", "/", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sandbox.LookPath(root, tt.cmd, tt.path, tt.dir)
			if tt.want == "" {
				if !errors.Is(err, sandbox.ErrNotFound) {
					t.Fatalf("want ErrNotFound, got %q, %v", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
