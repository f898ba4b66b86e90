package installconfig

import (
	"reflect"
	"strings"
	"testing"

	"github.com/bootlace/bootlace/internal/errs"
)

const kd = "usr/lib/bootc/kargs.d/"

func TestLoadKargsD(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		arch  string
		want  []string
	}{
		{"none", nil, "amd64", nil},
		{"empty dir", map[string]string{kd: ""}, "amd64", nil},
		{
			"file-name order",
			map[string]string{
				kd + "21-console-hvc0.toml": `kargs = ["console=ttyS0,115200n8", "console=hvc0"]`,
				kd + "10-rootfs-rw.toml":    `kargs = ["rw"]`,
				kd + "99-last.toml":         "kargs = [\n  \"testing-kargsd=3\",\n]\n",
				kd + "50-empty.toml":        `kargs = []`,
				kd + "README":               "not toml",
				kd + ".hidden.toml":         "bad = 1",
			},
			"amd64",
			[]string{"rw", "console=ttyS0,115200n8", "console=hvc0", "testing-kargsd=3"},
		},
		{
			"architecture filter",
			map[string]string{
				kd + "00-x86.toml":  "kargs = [\"x86\"]\nmatch-architectures = [\"x86_64\"]\n",
				kd + "10-arm.toml":  "kargs = [\"arm\"]\nmatch-architectures = [\"aarch64\"]\n",
				kd + "20-none.toml": "kargs = [\"none\"]\nmatch-architectures = []\n",
				kd + "30-all.toml":  "kargs = [\"all\"]\n",
			},
			"arm64",
			[]string{"arm", "all"},
		},
		{
			"usr/lib/bootc/kargs.d is a symlink within the image",
			map[string]string{
				"usr/lib/bootc/kargs.d":     "->/usr/share/kargs",
				"usr/share/kargs/00-a.toml": `kargs = ["a"]`,
				"usr/share/kargs/10-b.toml": "->../other/b.toml",
				"usr/share/other/b.toml":    `kargs = ["b"]`,
			},
			"x86_64",
			[]string{"a", "b"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LoadKargsD(newTree(t, tt.files), tt.arch)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLoadKargsDErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    []string
	}{
		{"unknown key", "kargs = [\"a\"]\n\nkarg = [\"b\"]\n", []string{"line 3", `key "karg"`, "unknown key"}},
		{"install table", "[install]\nkargs = [\"a\"]\n", []string{"line 1", `key "install"`, "unknown key"}},
		{"missing kargs", "match-architectures = [\"x86_64\"]\n", []string{`missing key "kargs"`}},
		{"wrong type", "kargs = \"rw\"\n", []string{"line 1", `key "kargs"`, "expected an array of strings"}},
		{"wrong element", "kargs = [\"rw\", true]\n", []string{"line 1", "element 1 is a boolean"}},
		{"syntax", "kargs = [\"rw\"\n", []string{"line"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := newTree(t, map[string]string{kd + "00-ok.toml": `kargs = ["ok"]`, kd + "10-bad.toml": tt.content})
			_, err := LoadKargsD(root, "amd64")
			if err == nil {
				t.Fatal("no error")
			}
			if errs.KindOf(err) != errs.Image {
				t.Errorf("kind = %v, want image", errs.KindOf(err))
			}
			for _, w := range append(tt.want, "/"+kd+"10-bad.toml") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
