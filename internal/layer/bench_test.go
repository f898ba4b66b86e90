package layer

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	lt "github.com/bootlace/bootlace/internal/layer/layertest"
)

// benchLayer is a synthetic 20k-file layer: 200 directories of 100 files of
// 4 KiB, about the shape of /usr/share in a distribution image.
func benchLayer(b *testing.B) []byte {
	b.Helper()
	return lt.MustTar(b, lt.Many("usr/share", 20000, 100, 4096)...)
}

// benchDir is where the benchmark unpacks: $BOOTLACE_BENCH_DIR when set
// (say a tmpfs, to take this VM's erratic disk out of the numbers), else a
// temporary directory.
func benchDir(b *testing.B) string {
	if d := os.Getenv("BOOTLACE_BENCH_DIR"); d != "" {
		dir, err := os.MkdirTemp(d, "layerbench")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	return b.TempDir()
}

func benchApply(b *testing.B, layer []byte, mediaType string) {
	dir := benchDir(b)
	b.SetBytes(int64(len(layer)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		root := filepath.Join(dir, "root")
		if err := os.RemoveAll(root); err != nil {
			b.Fatal(err)
		}
		if err := os.Mkdir(root, 0o755); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		a, err := NewApplier(root, Options{})
		if err != nil {
			b.Fatal(err)
		}
		rc, err := Decompress(bytes.NewReader(layer), mediaType)
		if err != nil {
			b.Fatal(err)
		}
		st, err := a.Apply(context.Background(), rc)
		if err != nil {
			b.Fatal(err)
		}
		rc.Close()
		a.Close()
		if st.Files != 20000 {
			b.Fatalf("%d files", st.Files)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/20000, "ns/file")
}

func BenchmarkApply20kFiles(b *testing.B) {
	benchApply(b, benchLayer(b), "application/vnd.oci.image.layer.v1.tar")
}

func BenchmarkApply20kFilesGzip(b *testing.B) {
	l, err := lt.Gzip(benchLayer(b))
	if err != nil {
		b.Fatal(err)
	}
	benchApply(b, l, "application/vnd.oci.image.layer.v1.tar+gzip")
}

func BenchmarkApply20kFilesZstd(b *testing.B) {
	l, err := lt.Zstd(benchLayer(b))
	if err != nil {
		b.Fatal(err)
	}
	benchApply(b, l, "application/vnd.oci.image.layer.v1.tar+zstd")
}
