package layer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootlace/bootlace/internal/errs"
	lt "github.com/bootlace/bootlace/internal/layer/layertest"
)

// FuzzApply applies two fuzzed layers (each possibly compressed) and checks
// that nothing outside the root changed: neither a canary next to the root
// (the target of "../" escapes) nor one at a fixed absolute path that the
// seeds' absolute symlinks aim at. Errors must be classified.
func FuzzApply(f *testing.F) {
	fixed := filepath.Join(f.TempDir(), "abs")
	if err := os.MkdirAll(filepath.Join(fixed, canaryName, "dir"), 0o755); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(fixed, canaryName, "file"), []byte(canaryBody), 0o644); err != nil {
		f.Fatal(err)
	}
	absCanary := filepath.Join(fixed, canaryName)
	for _, tc := range hostileCases() {
		if tc.opts.MaxBytes != 0 {
			continue // the bombs are large; the fuzzer bounds every layer anyway
		}
		ls := tc.layers(f, absCanary)
		switch len(ls) {
		case 1:
			f.Add(ls[0], []byte{})
		default:
			f.Add(ls[0], ls[1])
		}
	}
	f.Add(lt.MustTar(f, lt.Dir("etc"), lt.File("etc/a", "a"), lt.Hardlink("etc/b", "etc/a"), lt.Dir("run/x")),
		lt.MustTar(f, lt.Whiteout("etc/a"), lt.Opaque("run"), lt.Symlink("etc/c", "../../../"+canaryName)))
	f.Add(mustGzip(f, lt.MustTar(f, lt.File("g", "gzip"))), mustZstd(f, lt.MustTar(f, lt.File("z", "zstd"))))

	fixedBefore := canaryOnly(f, fixed)
	f.Fuzz(func(t *testing.T, l1, l2 []byte) {
		base, root := newCanaryBase(t)
		before := canaryOnly(t, base)
		opts := Options{MaxBytes: 4 << 20, Ostree: len(l1)%2 == 1}
		_, _, err := applyAll(root, opts, l1, l2)
		if err != nil {
			var e *errs.Error
			if !errors.As(err, &e) || e.Kind == errs.Internal {
				t.Errorf("unclassified error: %v", err)
			}
		}
		if after := canaryOnly(t, base); after != before {
			t.Fatalf("wrote outside the root:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		if after := canaryOnly(t, fixed); after != fixedBefore {
			t.Fatalf("wrote to the absolute canary:\nbefore:\n%s\nafter:\n%s", fixedBefore, after)
		}
	})
}

// canaryOnly snapshots base without its root subdirectory.
func canaryOnly(tb testing.TB, base string) string {
	tb.Helper()
	s, err := lt.Snapshot(base)
	if err != nil {
		tb.Fatal(err)
	}
	var b strings.Builder
	for _, p := range lt.Paths(s) {
		if p == "root" || strings.HasPrefix(p, "root/") {
			continue
		}
		n := s[p]
		b.WriteString(p + " " + n.Type.String() + n.Mode.String() + " " + n.SHA256 + " " + n.Link + "\n")
	}
	return b.String()
}
