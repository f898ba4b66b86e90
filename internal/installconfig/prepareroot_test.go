package installconfig

import (
	"reflect"
	"strings"
	"testing"

	"github.com/bootlace/bootlace/internal/errs"
)

func TestLoadPrepareRoot(t *testing.T) {
	tests := []struct {
		name      string
		files     map[string]string
		wantNil   bool
		path      string
		composefs Tristate
		verity    bool
		signed    bool
		transient bool
		flat      map[string]string
	}{
		{name: "missing", wantNil: true},
		{
			name:      "usr/lib default",
			files:     map[string]string{"usr/lib/ostree/prepare-root.conf": "[composefs]\nenabled = yes\n[root]\ntransient = true\n"},
			path:      "/usr/lib/ostree/prepare-root.conf",
			composefs: Yes, transient: true,
			flat: map[string]string{"composefs.enabled": "yes", "root.transient": "true"},
		},
		{
			name: "etc wins over usr/etc and usr/lib",
			files: map[string]string{
				"etc/ostree/prepare-root.conf":     "[composefs]\nenabled = verity\n",
				"usr/etc/ostree/prepare-root.conf": "[composefs]\nenabled = no\n",
				"usr/lib/ostree/prepare-root.conf": "[composefs]\nenabled = signed\n",
			},
			path: "/etc/ostree/prepare-root.conf", composefs: Yes, verity: true,
			flat: map[string]string{"composefs.enabled": "verity"},
		},
		{
			name: "usr/etc wins over usr/lib",
			files: map[string]string{
				"usr/etc/ostree/prepare-root.conf": "# comment\n\n[composefs]\nenabled=no\n",
				"usr/lib/ostree/prepare-root.conf": "[composefs]\nenabled = signed\n",
			},
			path: "/usr/etc/ostree/prepare-root.conf", composefs: No,
			flat: map[string]string{"composefs.enabled": "no"},
		},
		{
			name:      "signed",
			files:     map[string]string{"usr/lib/ostree/prepare-root.conf": "[composefs]\nenabled = signed\nkeypath = /etc/ostree/initramfs-root-binding.key\n[etc]\ntransient=false\n"},
			path:      "/usr/lib/ostree/prepare-root.conf",
			composefs: Yes, verity: true, signed: true,
			flat: map[string]string{"composefs.enabled": "signed", "composefs.keypath": "/etc/ostree/initramfs-root-binding.key", "etc.transient": "false"},
		},
		{
			name:      "maybe and unset",
			files:     map[string]string{"usr/lib/ostree/prepare-root.conf": "[sysroot]\nreadonly = true\n"},
			path:      "/usr/lib/ostree/prepare-root.conf",
			composefs: Maybe,
			flat:      map[string]string{"sysroot.readonly": "true"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pr, err := LoadPrepareRoot(newTree(t, tt.files))
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantNil {
				if pr != nil {
					t.Fatalf("got %+v, want nil", pr)
				}
				if pr.RequiresVerity() || len(pr.Flatten()) != 0 {
					t.Error("nil PrepareRoot methods")
				}
				return
			}
			if pr.Path != tt.path || pr.Composefs != tt.composefs || pr.RequiresVerity() != tt.verity ||
				pr.ComposefsSigned != tt.signed || pr.RootTransient != tt.transient {
				t.Errorf("got %+v", pr)
			}
			if got := pr.Flatten(); !reflect.DeepEqual(got, tt.flat) {
				t.Errorf("Flatten = %v, want %v", got, tt.flat)
			}
		})
	}
}

func TestLoadPrepareRootErrors(t *testing.T) {
	for name, content := range map[string]string{
		"bad tristate":     "[composefs]\nenabled = sometimes\n",
		"bad bool":         "[root]\ntransient = yes\n",
		"key before group": "enabled = yes\n",
		"garbage line":     "[composefs]\nenabled\n",
		"bad header":       "[composefs\n",
		"bad escape":       "[composefs]\nkeypath = a\\qb\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := LoadPrepareRoot(newTree(t, map[string]string{"usr/lib/ostree/prepare-root.conf": content}))
			if err == nil || errs.KindOf(err) != errs.Image || !strings.Contains(err.Error(), "/usr/lib/ostree/prepare-root.conf") {
				t.Errorf("err = %v, want image error naming the file", err)
			}
		})
	}
}

func TestParseKeyfile(t *testing.T) {
	kf, err := parseKeyfile("# c\n  # indented comment\n[a]\nk = v  \nk2=\\sx\\ty\\\\\n[b c]\nk=1\n[a]\nk=override\r\nname[de]=x\n")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]string{
		"a":   {"k": "override", "k2": " x\ty\\", "name[de]": "x"},
		"b c": {"k": "1"},
	}
	if !reflect.DeepEqual(kf.values, want) || !reflect.DeepEqual(kf.groups, []string{"a", "b c"}) {
		t.Errorf("got %v %v", kf.groups, kf.values)
	}
}
