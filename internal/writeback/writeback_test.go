package writeback

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// waitCalls waits until a 1 ms flusher has flushed n times.
func waitCalls(t *testing.T, calls *atomic.Int32, n int32) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for calls.Load() < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if calls.Load() < n {
		t.Fatalf("only %d periodic flushes in 5 s at a 1 ms interval", calls.Load())
	}
}

func TestFlusherFlushesUntilFinishedThenOnceMore(t *testing.T) {
	var calls atomic.Int32
	f, err := start(t.TempDir(), time.Millisecond, func(int) error { calls.Add(1); return nil })
	if err != nil {
		t.Fatal(err)
	}
	waitCalls(t, &calls, 3)
	f.Finish()
	f.Finish() // idempotent
	if err := f.Wait(); err != nil {
		t.Fatal(err)
	}
	n := calls.Load()
	time.Sleep(20 * time.Millisecond)
	if calls.Load() != n {
		t.Fatalf("flushes went on after Wait: %d, then %d", n, calls.Load())
	}
	if err := f.Wait(); err != nil { // again: same answer, no block
		t.Fatal(err)
	}
}

func TestFlusherLastFlushRunsEvenBeforeTheFirstTick(t *testing.T) {
	var calls atomic.Int32
	f, err := start(t.TempDir(), time.Hour, func(int) error { calls.Add(1); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Wait(); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 1 {
		t.Fatalf("want exactly the last flush, got %d flushes", calls.Load())
	}
}

func TestFlusherReportsTheFirstError(t *testing.T) {
	var calls atomic.Int32
	dir := t.TempDir()
	f, err := start(dir, time.Millisecond, func(int) error {
		if calls.Add(1) == 2 {
			return unix.EIO
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitCalls(t, &calls, 3)
	err = f.Wait()
	if !errors.Is(err, unix.EIO) {
		t.Fatalf("want EIO, got %v", err)
	}
	if want := "writing back " + dir; !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error %q does not name the directory", err)
	}
}

func TestStartErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		dir   string
		every time.Duration
	}{
		{"missing directory", filepath.Join(dir, "missing"), time.Second},
		{"not a directory", file, time.Second},
		{"zero interval", dir, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if f, err := Start(tc.dir, tc.every); err == nil {
				f.Wait()
				t.Fatal("Start succeeded")
			}
		})
	}
}

// TestFlusherRealSyncfs runs the real syncfs on the test's filesystem.
func TestFlusherRealSyncfs(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "data"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Start(dir, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Wait(); err != nil {
		t.Fatal(err)
	}
}
