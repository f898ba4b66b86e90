package layer

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	lt "github.com/bootlace/bootlace/internal/layer/layertest"
)

// applyAll applies raw (uncompressed or compressed) layers in order into a
// fresh applier on root, collecting warnings.
func applyAll(root string, opts Options, layers ...[]byte) ([]Stats, []string, error) {
	var warns []string
	opts.Warn = func(m string) { warns = append(warns, m) }
	a, err := NewApplier(root, opts)
	if err != nil {
		return nil, nil, err
	}
	defer a.Close()
	var stats []Stats
	for _, l := range layers {
		rc, err := Decompress(bytes.NewReader(l), "")
		if err != nil {
			return stats, warns, err
		}
		st, err := a.Apply(context.Background(), rc)
		rc.Close()
		stats = append(stats, st)
		if err != nil {
			return stats, warns, err
		}
	}
	return stats, warns, nil
}

// tars builds each layer from its entries.
func tars(tb testing.TB, layers ...[]lt.Entry) [][]byte {
	tb.Helper()
	out := make([][]byte, len(layers))
	for i, l := range layers {
		out[i] = lt.MustTar(tb, l...)
	}
	return out
}

// describe renders a snapshot node the way the tables spell expectations:
// "dir", "link:TARGET", or "file:CONTENT" (content read from disk).
func describe(tb testing.TB, root, p string, n lt.Node) string {
	switch {
	case n.Type.IsDir():
		return "dir"
	case n.Type&os.ModeSymlink != 0:
		return "link:" + n.Link
	case n.Type.IsRegular():
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			tb.Fatal(err)
		}
		return "file:" + string(b)
	default:
		return "other:" + n.Type.String()
	}
}

func snapshot(tb testing.TB, root string) map[string]lt.Node {
	tb.Helper()
	s, err := lt.Snapshot(root)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}
