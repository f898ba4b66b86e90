package installconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootlace/bootlace/internal/errs"
)

// FuzzLoad feeds arbitrary bytes as an install config and a kargs.d file:
// loading must never panic, and every failure must be an image error.
func FuzzLoad(f *testing.F) {
	for _, s := range []string{
		"[install]\nroot-fs-type = \"xfs\"\nkargs = [\"a\", \"b=c\"]\n",
		"[install.filesystem.root]\ntype = \"ext4\"\n[install.bootupd]\nskip-boot-uuid = true\n",
		"install.ostree = { bls-append-except-default = 'x' }\n",
		"[install]\nmatch-architectures = [\"x86_64\"]\nblock = [\"tpm2-luks\"]\n",
		"[install]\nfoo = 1\n",
		"kargs = [\"rw\"]\nmatch-architectures = [\"aarch64\"]\n",
		"[install]\nkargs = \"\"\"\nmulti\n\"\"\"\n",
		"[[install]]\n",
		"",
	} {
		f.Add([]byte(s))
	}
	root := f.TempDir()
	cfgPath := filepath.Join(root, "usr/lib/bootc/install/50-fuzz.toml")
	kdPath := filepath.Join(root, "usr/lib/bootc/kargs.d/50-fuzz.toml")
	for _, p := range []string{cfgPath, kdPath} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			f.Fatal(err)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, p := range []string{cfgPath, kdPath} {
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		cfg, _, err := Load(root, "amd64")
		if err != nil {
			if errs.KindOf(err) != errs.Image {
				t.Fatalf("Load: non-image error %v", err)
			}
		} else {
			if cfg == nil {
				t.Fatal("Load: nil config without error")
			}
			if _, err := cfg.JSON(true); err != nil {
				t.Fatalf("JSON: %v", err)
			}
		}
		if _, err := LoadKargsD(root, "amd64"); err != nil && errs.KindOf(err) != errs.Image {
			t.Fatalf("LoadKargsD: non-image error %v", err)
		}
	})
}

// FuzzKeyfile checks the keyfile parser never panics, that what it accepts
// survives a write-out and re-parse, and that prepare-root errors are plain
// errors (classified by LoadPrepareRoot).
func FuzzKeyfile(f *testing.F) {
	for _, s := range []string{
		"[composefs]\nenabled = yes\n[root]\ntransient = true\n",
		"# comment\n[a]\nk=\\s\\n\\t\\r\\\\\n",
		"[etc]\ntransient=1\n[composefs]\nenabled=signed\n",
		"k=v\n",
		"[a\n",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		kf, err := parseKeyfile(src)
		if err != nil {
			return
		}
		_, _ = parsePrepareRoot(src)
		// Writing the groups back with escaping must give the same values.
		var b strings.Builder
		for _, g := range kf.groups {
			b.WriteString("[" + g + "]\n")
			for k, v := range kf.values[g] {
				b.WriteString(k + "=" + escapeKeyfile(v) + "\n")
			}
		}
		kf2, err := parseKeyfile(b.String())
		if err != nil {
			t.Fatalf("re-parse of %q: %v", b.String(), err)
		}
		for _, g := range kf.groups {
			for k, v := range kf.values[g] {
				if v2, _ := kf2.get(g, k); v2 != v {
					t.Fatalf("[%s] %s: %q became %q", g, k, v, v2)
				}
			}
		}
	})
}

func escapeKeyfile(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case ' ':
			b.WriteString(`\s`)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
