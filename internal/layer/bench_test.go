package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	lt "github.com/bootlace/bootlace/internal/layer/layertest"
)

// The hot inner pieces of an install: decoding a layer blob and applying
// the tar stream to a directory. scripts/bench.sh measures the whole install;
// these isolate the two so a change to either shows up on its own:
//
//	go test -run '^$' -bench . -benchtime 3x ./internal/layer/
//	go test -short -run '^$' -bench . ./internal/layer/   (10x smaller layer)
//
// Apply's ns/file is the number to watch: creating files (kernel time), not
// decoding, bounds an install.

// mediaTypes are the layer encodings measured, by sub-benchmark name.
var mediaTypes = []struct{ name, mediaType string }{
	{"tar", "application/vnd.oci.image.layer.v1.tar"},
	{"gzip", "application/vnd.oci.image.layer.v1.tar+gzip"},
	{"zstd", "application/vnd.oci.image.layer.v1.tar+zstd"},
}

// benchFileCount is the number of regular files in the synthetic layer.
func benchFileCount() int {
	if testing.Short() {
		return 2000
	}
	return 20000
}

// benchLayer is a synthetic layer of benchFileCount files of 4 KiB in
// directories of 100, about the shape of /usr/share in a distribution image.
// The content is text-like (words from a fixed seed), so it compresses about
// as well as real files do and the decoders do real work.
func benchLayer(b *testing.B) []byte {
	b.Helper()
	words := strings.Fields("the of and to in is that for it as with was on be by this are from or " +
		"an at which not have but all can were one has their more if will been other when there " +
		"config usr lib share doc python module import return function static const struct void int")
	rng := rand.New(rand.NewPCG(1, 2))
	n := benchFileCount()
	var entries []lt.Entry
	for i := 0; i < n; i++ {
		dir := fmt.Sprintf("usr/share/d%04d", i/100)
		if i%100 == 0 {
			entries = append(entries, lt.Dir(dir))
		}
		var body bytes.Buffer
		for body.Len() < 4096 {
			body.WriteString(words[rng.IntN(len(words))])
			body.WriteByte(" \n"[rng.IntN(8)/7])
		}
		entries = append(entries, lt.Entry{Name: fmt.Sprintf("%s/f%06d", dir, i), Type: tar.TypeReg, Body: body.Bytes()[:4096]})
	}
	return lt.MustTar(b, entries...)
}

// encode compresses a tar layer as the media type named.
func encode(b *testing.B, layer []byte, name string) []byte {
	b.Helper()
	var (
		out []byte
		err error
	)
	switch name {
	case "tar":
		return layer
	case "gzip":
		out, err = lt.Gzip(layer)
	case "zstd":
		out, err = lt.Zstd(layer)
	default:
		b.Fatalf("unknown encoding %q", name)
	}
	if err != nil {
		b.Fatal(err)
	}
	return out
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

// BenchmarkApply decodes and applies the synthetic layer into an empty
// directory. MB/s is of the uncompressed tar stream.
func BenchmarkApply(b *testing.B) {
	layer := benchLayer(b)
	for _, mt := range mediaTypes {
		blob := encode(b, layer, mt.name)
		b.Run(mt.name, func(b *testing.B) {
			dir := benchDir(b)
			want := benchFileCount()
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
				rc, err := Decompress(bytes.NewReader(blob), mt.mediaType)
				if err != nil {
					b.Fatal(err)
				}
				st, err := a.Apply(context.Background(), rc)
				if err != nil {
					b.Fatal(err)
				}
				rc.Close()
				a.Close()
				if st.Files != want {
					b.Fatalf("applied %d files, want %d", st.Files, want)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(want), "ns/file")
		})
	}
}

// BenchmarkDecompress decodes the synthetic layer to io.Discard: the
// decoder's share of BenchmarkApply. MB/s is of the uncompressed stream.
func BenchmarkDecompress(b *testing.B) {
	layer := benchLayer(b)
	for _, mt := range mediaTypes[1:] {
		blob := encode(b, layer, mt.name)
		b.Run(mt.name, func(b *testing.B) {
			b.SetBytes(int64(len(layer)))
			b.ReportMetric(float64(len(layer))/float64(len(blob)), "ratio")
			for i := 0; i < b.N; i++ {
				rc, err := Decompress(bytes.NewReader(blob), mt.mediaType)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, rc)
				if err != nil {
					b.Fatal(err)
				}
				rc.Close()
				if n != int64(len(layer)) {
					b.Fatalf("decoded %d bytes, want %d", n, len(layer))
				}
			}
		})
	}
}
