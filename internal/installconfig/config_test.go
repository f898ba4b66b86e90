package installconfig

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/bootlace/bootlace/internal/errs"
)

const (
	lib   = "usr/lib/bootc/install/"
	local = "usr/local/lib/bootc/install/"
	usrEt = "usr/etc/bootc/install/"
	etc   = "etc/bootc/install/"
	run   = "run/bootc/install/"
)

func ptr[T any](v T) *T { return &v }

func TestLoadMerge(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		arch  string
		want  *Config
		// applied lists the in-image paths merged, in order.
		applied []string
	}{
		{
			name: "no config",
			want: &Config{},
		},
		{
			name:    "single file, canonicalized",
			files:   map[string]string{lib + "00-base.toml": "[install]\nroot-fs-type = \"xfs\"\n"},
			want:    &Config{RootFSType: "xfs", Filesystem: &FilesystemConfig{Root: &RootFilesystemConfig{Type: "xfs"}}, Block: []string{"direct"}},
			applied: []string{"/" + lib + "00-base.toml"},
		},
		{
			name: "same name in later dir replaces",
			files: map[string]string{
				lib + "10.toml": "[install]\nroot-fs-type = \"xfs\"\nkargs = [\"from-lib\"]\n",
				etc + "10.toml": "[install]\nroot-fs-type = \"ext4\"\n",
			},
			want:    &Config{RootFSType: "ext4", Filesystem: &FilesystemConfig{Root: &RootFilesystemConfig{Type: "ext4"}}, Block: []string{"direct"}},
			applied: []string{"/" + etc + "10.toml"},
		},
		{
			name: "dir precedence lib < local < usr/etc < etc < run",
			files: map[string]string{
				lib + "a.toml":   "[install]\nstateroot = \"lib\"\n",
				local + "a.toml": "[install]\nstateroot = \"local\"\n",
				usrEt + "a.toml": "[install]\nstateroot = \"usretc\"\n",
				usrEt + "b.toml": "[install]\nbootloader = \"grub\"\n",
				lib + "b.toml":   "[install]\nbootloader = \"none\"\n",
				etc + "c.toml":   "[install]\nkargs = [\"etc\"]\n",
				run + "c.toml":   "[install]\nkargs = [\"run\"]\n",
			},
			want:    &Config{Stateroot: "usretc", Bootloader: "grub", Kargs: []string{"run"}, Block: []string{"direct"}},
			applied: []string{"/" + usrEt + "a.toml", "/" + usrEt + "b.toml", "/" + run + "c.toml"},
		},
		{
			name: "etc beats usr/etc",
			files: map[string]string{
				usrEt + "a.toml": "[install]\nstateroot = \"usretc\"\n",
				etc + "a.toml":   "[install]\nstateroot = \"etc\"\n",
			},
			want:    &Config{Stateroot: "etc", Block: []string{"direct"}},
			applied: []string{"/" + etc + "a.toml"},
		},
		{
			name: "file-name order regardless of directory; kargs append",
			files: map[string]string{
				run + "10-test.toml":       "[install]\nkargs = [\"run10\"]\nkarg-deletes = [\"a\"]\n",
				lib + "50-test-kargs.toml": "[install]\nkargs = [\"lib50\", \"x=y\"]\nkarg-deletes = [\"b\"]\n",
				etc + "30.toml":            "[install]\nkargs = [\"etc30\"]\n",
			},
			want:    &Config{Kargs: []string{"run10", "etc30", "lib50", "x=y"}, KargDeletes: []string{"a", "b"}, Block: []string{"direct"}},
			applied: []string{"/" + run + "10-test.toml", "/" + etc + "30.toml", "/" + lib + "50-test-kargs.toml"},
		},
		{
			name: "scalars last wins, unset keeps earlier",
			files: map[string]string{
				lib + "00.toml": "[install]\nstateroot = \"one\"\nbootloader = \"grub\"\ndiscoverable-partitions = true\nroot-mount-spec = \"LABEL=root\"\n[install.bootupd]\nskip-boot-uuid = true\n",
				lib + "10.toml": "[install]\nstateroot = \"two\"\ndiscoverable-partitions = false\nroot-mount-spec = \"\"\n",
			},
			want: &Config{Stateroot: "two", Bootloader: "grub", DiscoverablePartitions: ptr(false), RootMountSpec: ptr(""),
				Bootupd: &BootupdConfig{SkipBootUUID: ptr(true)}, Block: []string{"direct"}},
		},
		{
			name: "block replaces",
			files: map[string]string{
				lib + "00.toml": "[install]\nblock = [\"direct\", \"tpm2-luks\"]\n",
				lib + "10.toml": "[install]\nblock = [\"tpm2-luks\"]\n",
				lib + "20.toml": "[install]\nkargs = []\n",
			},
			want: &Config{Block: []string{"tpm2-luks"}},
		},
		{
			name: "filesystem.root.type wins over root-fs-type",
			files: map[string]string{
				lib + "00.toml": "[install.filesystem.root]\ntype = \"xfs\"\n",
				lib + "10.toml": "[install]\nroot-fs-type = \"ext4\"\n",
			},
			want: &Config{RootFSType: "xfs", Filesystem: &FilesystemConfig{Root: &RootFilesystemConfig{Type: "xfs"}}, Block: []string{"direct"}},
		},
		{
			name: "inline table and dotted keys",
			files: map[string]string{
				lib + "00.toml": "install.filesystem = { root = { type = \"btrfs\" } }\ninstall.ostree.bls-append-except-default = \"grub_users=\\\"\\\"\"\n",
			},
			want: &Config{RootFSType: "btrfs", Filesystem: &FilesystemConfig{Root: &RootFilesystemConfig{Type: "btrfs"}},
				Ostree: &OstreeConfig{BLSAppendExceptDefault: ptr(`grub_users=""`)}, Block: []string{"direct"}},
		},
		{
			name: "architecture filter, GOARCH mapped to Rust names",
			arch: "arm64",
			files: map[string]string{
				lib + "00.toml": "[install]\nmatch-architectures = [\"x86_64\"]\nkargs = [\"x86\"]\n",
				lib + "10.toml": "[install]\nmatch-architectures = [\"aarch64\", \"s390x\"]\nkargs = [\"arm\"]\n",
				lib + "20.toml": "[install]\nmatch-architectures = []\nkargs = [\"none\"]\n",
				lib + "30.toml": "[install]\nkargs = [\"all\"]\n",
			},
			want:    &Config{Kargs: []string{"arm", "all"}, Block: []string{"direct"}},
			applied: []string{"/" + lib + "10.toml", "/" + lib + "30.toml"},
		},
		{
			name: "ppc64le matches powerpc64",
			arch: "ppc64le",
			files: map[string]string{
				lib + "00.toml": "[install]\nmatch-architectures = [\"powerpc64\"]\nkargs = [\"ppc\"]\n",
				lib + "10.toml": "[install]\nmatch-architectures = [\"ppc64le\"]\nkargs = [\"wrong-name\"]\n",
			},
			want: &Config{Kargs: []string{"ppc"}, Block: []string{"direct"}},
		},
		{
			name: "symlink to /dev/null masks",
			files: map[string]string{
				lib + "10.toml": "[install]\nkargs = [\"masked\"]\n",
				etc + "10.toml": "->/dev/null",
				lib + "20.toml": "[install]\nkargs = [\"kept\"]\n",
			},
			want:    &Config{Kargs: []string{"kept"}, Block: []string{"direct"}},
			applied: []string{"/" + lib + "20.toml"},
		},
		{
			name: "non-toml and dotfiles ignored",
			files: map[string]string{
				lib + "10.conf":        "garbage",
				lib + ".hidden.toml":   "garbage",
				lib + "10.toml.rpmnew": "garbage",
				lib + "20.toml":        "[install]\nstateroot = \"s\"\n",
			},
			want: &Config{Stateroot: "s", Block: []string{"direct"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := newTree(t, tt.files)
			arch := tt.arch
			if arch == "" {
				arch = "amd64"
			}
			got, sources, err := Load(root, arch)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				gj, _ := got.JSON(true)
				wj, _ := tt.want.JSON(true)
				t.Errorf("config\n got %s\nwant %s", gj, wj)
			}
			if tt.applied != nil {
				var applied []string
				for _, s := range sources {
					if s.Applied {
						applied = append(applied, s.Path)
					}
				}
				if !reflect.DeepEqual(applied, tt.applied) {
					t.Errorf("applied = %v, want %v (sources %+v)", applied, tt.applied, sources)
				}
			}
		})
	}
}

func TestLoadSources(t *testing.T) {
	root := newTree(t, map[string]string{
		lib + "10.toml": "[install]\n",
		etc + "10.toml": "[install]\n",
		lib + "20.toml": "[install]\nmatch-architectures = [\"s390x\"]\n",
		lib + "30.toml": "[install.ostree]\nfuture-key = 1\n",
	})
	_, sources, err := Load(root, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	want := []Source{
		{Path: "/" + lib + "10.toml", Skipped: "shadowed by /" + etc + "10.toml"},
		{Path: "/" + etc + "10.toml", Applied: true},
		{Path: "/" + lib + "20.toml", Skipped: "match-architectures [s390x] does not include x86_64"},
		{Path: "/" + lib + "30.toml", Applied: true, Warnings: []string{"/" + lib + `30.toml: line 2: unknown key "install.ostree.future-key" ignored`}},
	}
	if !reflect.DeepEqual(sources, want) {
		t.Errorf("sources\n got %+v\nwant %+v", sources, want)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    []string // substrings of the error message
	}{
		{"unknown key", "# comment\n[install]\nroot-fs-type = \"xfs\"\nfoo = 1\n", []string{"line 4", `key "install.foo"`, "unknown key"}},
		{"unknown nested key", "[install.filesystem.root]\ntype = \"xfs\"\nsize = \"10G\"\n", []string{"line 3", `"install.filesystem.root.size"`, "unknown key"}},
		{"unknown bootupd key", "[install]\n\n[install.bootupd]\nfoo = true\n", []string{"line 4", `"install.bootupd.foo"`}},
		{"unknown top-level table", "[install]\n[other]\nx = 1\n", []string{"line 2", `key "other"`, "unknown key"}},
		{"unknown dotted key", "install.kargz = [\"a\"]\n", []string{"line 1", `"install.kargz"`}},
		{"kargs not an array", "[install]\nkargs = \"quiet\"\n", []string{"line 2", `"install.kargs"`, "expected an array of strings, found a string"}},
		{"kargs element type", "[install]\nkargs = [\n  \"a\",\n  1,\n]\n", []string{"line 2", `"install.kargs"`, "element 1 is an integer"}},
		{"bool type", "[install]\ndiscoverable-partitions = \"yes\"\n", []string{"line 2", "expected a boolean, found a string"}},
		{"string type", "[install]\n\n\nstateroot = 5\n", []string{"line 4", `"install.stateroot"`, "expected a string, found an integer"}},
		{"install not a table", "install = 1\n", []string{"line 1", `key "install"`, "expected a table"}},
		{"bad fs type", "[install]\nroot-fs-type = \"vfat\"\n", []string{"line 2", `invalid value "vfat"`}},
		{"bad block", "[install]\nblock = [\"direct\", \"luks\"]\n", []string{"line 2", `invalid value "luks"`}},
		{"empty block", "[install]\nblock = []\n", []string{"line 2", "at least one"}},
		{"bad bootloader", "[install]\nbootloader = \"lilo\"\n", []string{"line 2", `invalid value "lilo"`}},
		{"bad stateroot", "[install]\nstateroot = \"a/b\"\n", []string{"line 2", "invalid stateroot"}},
		{"syntax", "[install]\nkargs = [\"a\"\n", []string{"line"}},
		{"duplicate key", "[install]\nstateroot = \"a\"\nstateroot = \"b\"\n", []string{"line 3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := newTree(t, map[string]string{lib + "50-x.toml": tt.content})
			_, _, err := Load(root, "amd64")
			if err == nil {
				t.Fatal("no error")
			}
			if k := errs.KindOf(err); k != errs.Image {
				t.Errorf("kind = %v, want image (%v)", k, err)
			}
			msg := err.Error()
			for _, w := range append(tt.want, "/"+lib+"50-x.toml") {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
		})
	}
}

func TestJSON(t *testing.T) {
	root := newTree(t, map[string]string{
		lib + "00.toml": `[install]
root-fs-type = "xfs"
kargs = ["console=ttyS0"]
karg-deletes = ["quiet"]
stateroot = "debian"
boot-mount-spec = ""
enforce-container-sigpolicy = true
[install.ostree]
bls-append-except-default = 'grub_users=""'
`,
	})
	cfg, _, err := Load(root, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	got, err := cfg.JSON(false)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"root-fs-type":"xfs","filesystem":{"root":{"type":"xfs"}},"block":["direct"],"ostree":{"bls-append-except-default":"grub_users=\"\""},"stateroot":"debian","boot-mount-spec":"","enforce-container-sigpolicy":true}`
	if string(got) != want {
		t.Errorf("JSON(false)\n got %s\nwant %s", got, want)
	}
	got, err = cfg.JSON(true)
	if err != nil {
		t.Fatal(err)
	}
	want = `{"root-fs-type":"xfs","filesystem":{"root":{"type":"xfs"}},"block":["direct"],"kargs":["console=ttyS0"],"karg-deletes":["quiet"],"ostree":{"bls-append-except-default":"grub_users=\"\""},"stateroot":"debian","boot-mount-spec":"","enforce-container-sigpolicy":true}`
	if string(got) != want {
		t.Errorf("JSON(true)\n got %s\nwant %s", got, want)
	}
	if len(cfg.Kargs) != 1 {
		t.Errorf("JSON(false) modified the config: %v", cfg.Kargs)
	}
	var empty *Config
	if got, _ := empty.JSON(true); string(got) != "{}" {
		t.Errorf("nil JSON = %s", got)
	}
}

// TestNoHostLeak proves absolute symlinks in the image resolve inside the
// tree: the host directory they name holds a conflicting config that must
// never be read.
func TestNoHostLeak(t *testing.T) {
	host := t.TempDir()
	writeTree(t, host, map[string]string{
		"install/00-evil.toml":      "[install]\nroot-fs-type = \"btrfs\"\nkargs = [\"evil\"]\n",
		"kargs.d/00-evil.toml":      "kargs = [\"evil\"]\n",
		"ostree/prepare-root.conf":  "[composefs]\nenabled = signed\n",
		"selinux/config":            "SELINUX=enforcing\nSELINUXTYPE=targeted\n",
		"selinux/targeted/policy/x": "",
		"evil.toml":                 "[install]\nkargs = [\"evil\"]\n",
	})
	t.Run("directory symlinks to an absolute host path", func(t *testing.T) {
		root := newTree(t, map[string]string{
			"usr/lib/bootc/install":       "->" + filepath.Join(host, "install"),
			"usr/lib/bootc/kargs.d":       "->" + filepath.Join(host, "kargs.d"),
			"usr/lib/ostree":              "->" + filepath.Join(host, "ostree"),
			"etc":                         "->" + host,
			"usr/local/lib/bootc/install": "->../../../../../../../../" + filepath.Join(host, "install"),
		})
		cfg, sources, err := Load(root, "amd64")
		if err != nil {
			t.Fatal(err)
		}
		if len(sources) != 0 || cfg.RootFS() != "" || len(cfg.Kargs) != 0 {
			t.Errorf("host config leaked: %+v %+v", cfg, sources)
		}
		kd, err := LoadKargsD(root, "amd64")
		if err != nil || len(kd) != 0 {
			t.Errorf("kargs.d leaked: %v %v", kd, err)
		}
		pr, err := LoadPrepareRoot(root)
		if err != nil || pr != nil {
			t.Errorf("prepare-root leaked: %+v %v", pr, err)
		}
		pol, err := SELinux(root)
		if err != nil || pol != (Policy{}) {
			t.Errorf("selinux leaked: %+v %v", pol, err)
		}
	})
	t.Run("absolute symlinks resolve inside the tree", func(t *testing.T) {
		// The same absolute path exists in the tree with the good content.
		inTree := strings.TrimPrefix(host, "/")
		root := newTree(t, map[string]string{
			inTree + "/install/00-good.toml": "[install]\nroot-fs-type = \"xfs\"\n",
			lib + "10.toml":                  "->" + filepath.Join(host, "evil.toml"),
			inTree + "/evil.toml":            "[install]\nkargs = [\"good\"]\n",
			"etc/bootc/install":              "->" + filepath.Join(host, "install"),
		})
		cfg, _, err := Load(root, "amd64")
		if err != nil {
			t.Fatal(err)
		}
		if cfg.RootFS() != "xfs" || !reflectEqual(cfg.Kargs, []string{"good"}) {
			t.Errorf("got %+v kargs %v, want xfs and [good]", cfg, cfg.Kargs)
		}
	})
	t.Run("dangling file symlink is an image error, not a host read", func(t *testing.T) {
		root := newTree(t, map[string]string{lib + "10.toml": "->" + filepath.Join(host, "evil.toml")})
		_, _, err := Load(root, "amd64")
		if err == nil || errs.KindOf(err) != errs.Image {
			t.Fatalf("err = %v, want image error", err)
		}
	})
}

func reflectEqual(a, b []string) bool { return reflect.DeepEqual(a, b) }

func TestResolveLoop(t *testing.T) {
	root := newTree(t, map[string]string{
		"a":                     "->b",
		"b":                     "->/a",
		lib:                     "",
		"x/":                    "",
		"usr/lib/bootc/kargs.d": "->/a",
	})
	_, err := LoadKargsD(root, "amd64")
	if err == nil || errs.KindOf(err) != errs.Image {
		t.Fatalf("symlink loop: err = %v, want image error", err)
	}
	if !errors.Is(err, syscall.ELOOP) {
		t.Errorf("err = %v, want ELOOP", err)
	}
}

func TestRustArch(t *testing.T) {
	for in, want := range map[string]string{"amd64": "x86_64", "arm64": "aarch64", "s390x": "s390x", "ppc64le": "powerpc64", "riscv64": "riscv64", "x86_64": "x86_64", "aarch64": "aarch64"} {
		if got := RustArch(in); got != want {
			t.Errorf("RustArch(%q) = %q, want %q", in, got, want)
		}
	}
}
