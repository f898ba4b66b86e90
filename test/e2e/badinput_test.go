package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadInput checks that each kind of bad input gets its documented exit
// code and a message saying what to do, and leaves the host as it was.
func TestBadInput(t *testing.T) {
	requireRoot(t)
	archive := fixture(t, "bookworm")
	dir := t.TempDir()
	notBootable := filepath.Join(dir, "plain.tar")
	if err := os.WriteFile(notBootable, []byte("not an image"), 0o644); err != nil {
		t.Fatal(err)
	}
	disk := sparseDisk(t, 8<<30)
	small := filepath.Join(dir, "small.raw")
	if err := os.WriteFile(small, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(small, 512<<20); err != nil {
		t.Fatal(err)
	}
	notMounted := t.TempDir()
	tests := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no source", []string{"install", "to-disk", "--via-loopback", disk}, 2, "pass --source-imgref"},
		{"bad transport", []string{"install", "to-disk", "--source-imgref", "ftp:/x", "--via-loopback", disk}, 2, "unknown transport"},
		{"unknown flag", []string{"install", "to-disk", "--no-such-flag", disk}, 2, "unknown flag"},
		{"missing archive", []string{"install", "to-disk", "--via-loopback", "--source-imgref", "oci-archive:" + filepath.Join(dir, "none.tar"), disk}, 5, "check that the path exists"},
		{"garbage archive", []string{"install", "to-disk", "--via-loopback", "--source-imgref", "oci-archive:" + notBootable, disk}, 5, ""},
		{"disk too small", []string{"install", "to-disk", "--via-loopback", "--source-imgref", "oci-archive:" + archive, small}, 4, "too small"},
		{"not a block device", []string{"install", "to-disk", "--source-imgref", "oci-archive:" + archive, disk}, 2, "--via-loopback"},
		{"target not mounted", []string{"install", "to-filesystem", "--source-imgref", "oci-archive:" + archive, notMounted}, 4, "not a mount point"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loops, mounts := hostState(t)
			_, stderr, code := bootlaceRun(t, nil, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d\n%s", code, tt.code, stderr)
			}
			if !strings.Contains(stderr, tt.msg) {
				t.Errorf("message %q lacks %q", stderr, tt.msg)
			}
			checkHostUnchanged(t, loops, mounts)
		})
	}
}
