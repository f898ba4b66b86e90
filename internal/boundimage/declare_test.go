package boundimage

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bootlace/bootlace/internal/errs"
)

// tree builds an image tree: files maps paths to content, links maps
// bound-images.d entry names to link targets.
func tree(t *testing.T, files map[string]string, links map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, data := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d := filepath.Join(root, DeclDir)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(d, name)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestList(t *testing.T) {
	root := tree(t, map[string]string{
		"usr/share/containers/systemd/app.image":    "[Image]\nImage=quay.io/x/app:1\n",
		"usr/share/containers/systemd/db.container": "[Unit]\nDescription=db\n[Container]\nImage=quay.io/x/db:2\nExec=x\n",
		// A staged tree keeps /etc at /usr/etc.
		"usr/etc/containers/systemd/web.container": "[Container]\n# comment\nImage = quay.io/x/web:3\n",
		"usr/lib/bootc/bound-images.d/README":      "ignored: not .image or .container",
	}, map[string]string{
		"app.image":     "/usr/share/containers/systemd/app.image",
		"db.container":  "../../../share/containers/systemd/db.container",
		"web.container": "/etc/containers/systemd/web.container",
	})
	got, err := List(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []Image{
		{Ref: "quay.io/x/app:1", Decl: "/usr/lib/bootc/bound-images.d/app.image"},
		{Ref: "quay.io/x/db:2", Decl: "/usr/lib/bootc/bound-images.d/db.container"},
		{Ref: "quay.io/x/web:3", Decl: "/usr/lib/bootc/bound-images.d/web.container"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("List = %+v, want %+v", got, want)
	}
	if r := Refs(got); !reflect.DeepEqual(r, []string{"quay.io/x/app:1", "quay.io/x/db:2", "quay.io/x/web:3"}) {
		t.Fatalf("Refs = %q", r)
	}
	empty, err := List(t.TempDir())
	if err != nil || len(empty) != 0 || empty == nil {
		t.Fatalf("no bound-images.d: %#v %v", empty, err)
	}
}

func TestListRefuses(t *testing.T) {
	const q = "usr/share/containers/systemd/"
	for _, tt := range []struct {
		name  string
		files map[string]string
		links map[string]string
		want  string // in the error
	}{
		{"auth file", map[string]string{q + "a.image": "[Image]\nImage=quay.io/x/a:1\nAuthFile=/etc/auth.json\n"},
			map[string]string{"a.image": "/" + q + "a.image"}, "AuthFile= is not supported"},
		{"specifier", map[string]string{q + "a.container": "[Container]\nImage=quay.io/x/%H:1\n"},
			map[string]string{"a.container": "/" + q + "a.container"}, "% specifiers"},
		{"no image", map[string]string{q + "a.image": "[Image]\nPull=always\n"},
			map[string]string{"a.image": "/" + q + "a.image"}, "no Image= key"},
		{"image in the wrong section", map[string]string{q + "a.container": "[Image]\nImage=quay.io/x/a:1\n"},
			map[string]string{"a.container": "/" + q + "a.container"}, "no Image= key"},
		// A link to a host path resolves inside the tree: here, to nothing.
		{"host path", nil, map[string]string{"evil.image": "/etc/hostname"}, "no such file"},
		{"escape", nil, map[string]string{"evil.image": "../../../../../../etc/hostname"}, "no such file"},
		{"not a symlink", map[string]string{DeclDir + "/plain.image": "[Image]\nImage=quay.io/x/a:1\n"}, nil, "not a symlink"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := List(tree(t, tt.files, tt.links))
			if err == nil || errs.KindOf(err) != errs.Image || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("List: %v, want an image error containing %q", err, tt.want)
			}
			if errors.Is(err, os.ErrPermission) {
				t.Fatal(err)
			}
		})
	}
}

func TestParseQuadlet(t *testing.T) {
	for _, tt := range []struct {
		src, ext, want string
	}{
		{"[Image]\nImage=a:1\n", ".image", "a:1"},
		{"[Image]\nImage=a:1\nImage=b:2\n", ".image", "b:2"},                             // last assignment wins
		{"[Container]\nImage=quay.io/x/\\\n  app:1\n", ".container", "quay.io/x/ app:1"}, // continuation joins with a space
		{"; c\n[Container]\n  Image  =  a:1  \n", ".container", "a:1"},
		{"[Container]\nImage=a%%b:1\n", ".container", "a%b:1"},
		{"[Container]\nAuthFile=/x\nImage=a:1\n", ".container", "a:1"}, // only .image files have AuthFile=
	} {
		got, err := parseQuadlet([]byte(tt.src), tt.ext)
		if err != nil || got != tt.want {
			t.Errorf("parseQuadlet(%q) = %q, %v; want %q", tt.src, got, err, tt.want)
		}
	}
}
