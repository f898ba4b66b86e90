package ostreecommit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// benchTree writes n files of 1 B to 50 KiB (about 25 KiB on average,
// all distinct) in directories of 100, and returns the content bytes.
func benchTree(b *testing.B, dir string, n int) int64 {
	b.Helper()
	var total int64
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("d%03d", i/100), fmt.Sprintf("f%05d", i))
		if i%100 == 0 {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				b.Fatal(err)
			}
		}
		data := pseudo(uint64(i), 1+(i*7919)%(50<<10))
		if err := os.WriteFile(p, data, 0o644); err != nil {
			b.Fatal(err)
		}
		total += int64(len(data))
	}
	return total
}

// BenchmarkCommit commits a synthetic tree of OSTREECOMMIT_BENCH_FILES
// files (default 2000) on the filesystem of the test's temporary
// directory (TMPDIR), with this package and, for comparison, with the
// host's ostree commit and the same flags. Building the tree is not
// timed.
func BenchmarkCommit(b *testing.B) {
	requireOstreeRoot(b)
	n := 2000
	if s := os.Getenv("OSTREECOMMIT_BENCH_FILES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			b.Fatalf("OSTREECOMMIT_BENCH_FILES: %v", err)
		}
		n = v
	}
	writers := []struct {
		name   string
		commit func(b *testing.B, repo, stage string)
	}{
		{"go", func(b *testing.B, repo, stage string) {
			if _, err := Commit(context.Background(), repo, stage, baseOptions()); err != nil {
				b.Fatal(err)
			}
		}},
		{"ostree-cli", func(b *testing.B, repo, stage string) { ostreeCommit(b, repo, stage, baseOptions()) }},
	}
	for _, w := range writers {
		b.Run(w.name, func(b *testing.B) {
			tmp := b.TempDir()
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				sys := filepath.Join(tmp, fmt.Sprint(i))
				repo := newRepo(b, sys)
				stage := filepath.Join(sys, "stage")
				b.SetBytes(benchTree(b, stage, n))
				run(b, "sync")
				b.StartTimer()
				w.commit(b, repo, stage)
				b.StopTimer()
				if err := os.RemoveAll(sys); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
