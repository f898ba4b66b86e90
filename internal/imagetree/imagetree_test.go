package imagetree

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestConfinedReads(t *testing.T) {
	host := t.TempDir()
	secret := filepath.Join(host, "secret")
	if err := os.WriteFile(secret, []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	must(os.WriteFile(filepath.Join(root, "etc/a"), []byte("image"), 0o644))
	must(os.Symlink("/etc/a", filepath.Join(root, "abs")))             // absolute: resolves in the tree
	must(os.Symlink(secret, filepath.Join(root, "escape")))            // to a host path that the tree lacks
	must(os.Symlink("../../../../"+secret, filepath.Join(root, "up"))) // climbing out
	if b, err := ReadFile(root, "/abs", 100); err != nil || string(b) != "image" {
		t.Fatalf("absolute link: %q %v", b, err)
	}
	for _, p := range []string{"escape", "up"} {
		if b, err := ReadFile(root, p, 100); err == nil {
			t.Errorf("%s read %q from outside the tree", p, b)
		}
	}
	if _, err := ReadFile(root, "etc/a", 2); err == nil {
		t.Error("limit not enforced")
	}
	if !IsRegular(root, "abs") || IsRegular(root, "etc") {
		t.Error("IsRegular")
	}
	names, err := ReadDirNames(root, "/")
	if err != nil || !reflect.DeepEqual(names, []string{"abs", "escape", "etc", "up"}) {
		t.Errorf("names %v %v", names, err)
	}
}
