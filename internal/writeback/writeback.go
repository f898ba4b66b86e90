// Package writeback keeps a filesystem's dirty data moving to disk while an
// install is still writing it.
//
// Left alone, the kernel starts writing back only when dirty data passes
// dirty_background_ratio (gigabytes on a machine with a lot of memory) or
// grows 30 s old, so an install that writes a 1.5 GiB tree in ten seconds
// has all of it in memory when ostree's deploy calls syncfs, and the disk
// only then starts working, while ostree waits. A Flusher instead calls
// syncfs(2) on the filesystem over and over while the layers are applied,
// so the disk writes while the CPUs decompress; a last flush then runs
// beside the ostree commit, which only renames files and needs no data
// written.
package writeback

import (
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Flusher flushes one filesystem periodically from a goroutine of its own.
type Flusher struct {
	dir    string
	fd     int
	every  time.Duration
	finish chan struct{}
	done   chan struct{}
	once   sync.Once
	err    error // the first flush error; read only after done
	syncfs func(fd int) error
}

// Start opens dir and flushes its filesystem every interval until Finish.
// Each flush starts only after the previous one returned, so a slow disk
// gets back-to-back flushes, never a pile of them.
func Start(dir string, every time.Duration) (*Flusher, error) {
	return start(dir, every, unix.Syncfs)
}

func start(dir string, every time.Duration, syncfs func(int) error) (*Flusher, error) {
	if every <= 0 {
		return nil, fmt.Errorf("writeback of %s: interval must be positive, got %s", dir, every)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s for writeback: %w", dir, err)
	}
	f := &Flusher{dir: dir, fd: fd, every: every, finish: make(chan struct{}), done: make(chan struct{}), syncfs: syncfs}
	go f.loop()
	return f, nil
}

func (f *Flusher) loop() {
	defer close(f.done)
	defer unix.Close(f.fd)
	t := time.NewTimer(f.every)
	defer t.Stop()
	for {
		select {
		case <-f.finish:
			f.flush()
			return
		case <-t.C:
			f.flush()
			t.Reset(f.every)
		}
	}
}

// flush records the first error: syncfs reports a write-back error once
// per open file description, and a failed write means data is lost.
func (f *Flusher) flush() {
	if err := f.syncfs(f.fd); err != nil && f.err == nil {
		f.err = fmt.Errorf("writing back %s: %w", f.dir, err)
	}
}

// Finish stops the periodic flushes and starts a last one of everything
// written so far; it returns at once. Calling it again does nothing.
func (f *Flusher) Finish() { f.once.Do(func() { close(f.finish) }) }

// Wait finishes (if Finish was not called), waits for the last flush and
// returns the first error a flush reported. It may be called more than once.
func (f *Flusher) Wait() error {
	f.Finish()
	<-f.done
	return f.err
}
