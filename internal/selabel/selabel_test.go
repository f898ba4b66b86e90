package selabel

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootlace/bootlace/internal/errs"
	"golang.org/x/sys/unix"
)

// A trimmed copy of Fedora's targeted policy entries for container storage.
const fileContexts = `# comment
/var/lib/containers(/.*)?	system_u:object_r:container_var_lib_t:s0
/var/lib/containers/storage/overlay(/.*)?	system_u:object_r:container_ro_file_t:s0
/var/lib/containers/storage/overlay-images(/.*)?	system_u:object_r:container_ro_file_t:s0
/var/lib/containers/storage/overlay-layers(/.*)?	system_u:object_r:container_ro_file_t:s0
/var/lib/containers/storage/volumes/[^/]*/.*	<<none>>
/var/lib/containers/storage/overlay/l	-d	system_u:object_r:container_var_lib_t:s0
/var/lib/containers/storage/overlay/l/.*	-l	system_u:object_r:container_file_t:s0
/var/lib/containers/storage/bad(?=x)	system_u:object_r:pcre_only_t:s0
`

func policyTree(t *testing.T, local string) string {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "etc/selinux/targeted/contexts/files")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "file_contexts"), []byte(fileContexts), 0o644); err != nil {
		t.Fatal(err)
	}
	if local != "" {
		if err := os.WriteFile(filepath.Join(dir, "file_contexts.local"), []byte(local), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestLookup(t *testing.T) {
	l, err := Load(policyTree(t, "/var/lib/containers/storage/overlay-images/images.json	--	system_u:object_r:local_t:s0\n"), "targeted")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path string
		mode fs.FileMode
		want string // "" = unlabelled
	}{
		{"/var/lib/containers/storage", fs.ModeDir, "container_var_lib_t"},
		{"/var/lib/containers/storage/storage.lock", 0, "container_var_lib_t"},
		{"/var/lib/containers/storage/overlay/abc/diff/bin/sh", 0, "container_ro_file_t"}, // later line wins
		{"/var/lib/containers/storage/overlay/l", fs.ModeDir, "container_var_lib_t"},      // file type matches -d
		{"/var/lib/containers/storage/overlay/l/ABC", fs.ModeSymlink, "container_file_t"},
		{"/var/lib/containers/storage/overlay/l/ABC", 0, "container_ro_file_t"}, // -l does not match a file
		{"/var/lib/containers/storage/overlay-images/images.json", 0, "local_t"},
		{"/var/lib/containers/storage/volumes/v/data", 0, ""}, // <<none>>
		{"/usr/bin/sh", 0, ""},
	} {
		got, ok := l.Lookup(tt.path, tt.mode)
		if tt.want == "" {
			if ok {
				t.Errorf("Lookup(%s) = %q, want unlabelled", tt.path, got)
			}
			continue
		}
		if !ok || !strings.Contains(got, ":"+tt.want+":") {
			t.Errorf("Lookup(%s, %v) = %q %v, want %s", tt.path, tt.mode, got, ok, tt.want)
		}
	}
}

// Exact paths win over any regular expression, wherever they are.
func TestLookupExactWins(t *testing.T) {
	l := &Labeler{specs: parse([]byte("/a/b\tu:r:exact_t:s0\n/a(/.*)?\tu:r:re_t:s0\n"))}
	if got, _ := l.Lookup("/a/b", 0); got != "u:r:exact_t:s0" {
		t.Fatalf("got %q", got)
	}
}

func TestLoadMissing(t *testing.T) {
	if _, err := Load(t.TempDir(), "targeted"); errs.KindOf(err) != errs.Image {
		t.Fatalf("Load without file_contexts: %v", err)
	}
}

func TestLabelTree(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("setting security.selinux needs CAP_SYS_ADMIN (root)")
	}
	l, err := Load(policyTree(t, ""), "targeted")
	if err != nil {
		t.Fatal(err)
	}
	store := t.TempDir()
	os.MkdirAll(filepath.Join(store, "overlay/l"), 0o700)
	os.WriteFile(filepath.Join(store, "storage.lock"), nil, 0o600)
	os.Symlink("../abc/diff", filepath.Join(store, "overlay/l/ABC"))
	if err := l.LabelTree(store, "/var/lib/containers/storage"); err != nil {
		if err == unix.ENOTSUP || strings.Contains(err.Error(), "not supported") {
			t.Skipf("the temp filesystem has no security xattrs: %v", err)
		}
		t.Fatal(err)
	}
	for p, want := range map[string]string{"": "container_var_lib_t", "storage.lock": "container_var_lib_t",
		"overlay": "container_ro_file_t", "overlay/l": "container_var_lib_t", "overlay/l/ABC": "container_file_t"} {
		buf := make([]byte, 256)
		n, err := unix.Lgetxattr(filepath.Join(store, p), "security.selinux", buf)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if got := strings.TrimRight(string(buf[:n]), "\x00"); !strings.Contains(got, ":"+want+":") {
			t.Errorf("%s labelled %q, want %s", p, got, want)
		}
	}
}
