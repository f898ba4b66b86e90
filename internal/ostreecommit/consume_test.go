package ostreecommit

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Consuming moves the staged inodes into the repository: no file data is
// copied and the stage is gone afterwards.
func TestCommitConsumesStage(t *testing.T) {
	requireOstreeRoot(t)
	tmp := t.TempDir()
	repo := newRepo(t, filepath.Join(tmp, "sys"))
	stage := build(t, filepath.Join(tmp, "sys", "stage"), func(b builder) {
		b.file("usr/bin/a", pseudo(10, 10000), 0o755, 0, 0)
		b.file("usr/lib/b", pseudo(11, 1<<20), 0o644, 1000, 1000)
		b.file("etc/c", []byte("c"), 0o600|0o4000, 0, 0)
		b.link("usr/bin/a", "usr/sbin/a-hardlink")
		b.symlink("lib", "usr/lib", 0, 0)
	})
	inodes := map[string]uint64{}
	err := filepath.WalkDir(stage, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(stage, p)
		inodes["/"+rel] = info.Sys().(*syscall.Stat_t).Ino
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var progressFiles, progressBytes int64
	opts := baseOptions()
	opts.Progress = func(files, bytes int64) { progressFiles, progressBytes = files, bytes }
	if _, err := Commit(context.Background(), repo, stage, opts); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(stage); !os.IsNotExist(err) {
		t.Fatalf("stage still exists: %v", err)
	}
	if progressFiles != 5 || progressBytes != 2*10000+1<<20+1 {
		t.Errorf("final progress %d files %d bytes, want 5 files %d bytes", progressFiles, progressBytes, 2*10000+1<<20+1)
	}
	// ostree ls -R -C prints "-MODE UID GID SIZE CHECKSUM PATH" for files.
	checked := 0
	for line := range strings.Lines(run(t, "ostree", "--repo="+repo, "ls", "-R", "-C", opts.Branch)) {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasPrefix(f[0], "-") {
			continue
		}
		csum, path := f[4], f[5]
		var st unix.Stat_t
		obj := filepath.Join(repo, "objects", csum[:2], csum[2:]+".file")
		if err := unix.Stat(obj, &st); err != nil {
			t.Fatal(err)
		}
		if want, ok := inodes[path]; !ok || st.Ino != want {
			t.Errorf("%s: object inode %d, staged file had inode %d", path, st.Ino, want)
		}
		checked++
	}
	if checked != len(inodes) {
		t.Errorf("checked %d files, staged %d", checked, len(inodes))
	}
}

func TestCommitErrors(t *testing.T) {
	requireOstreeRoot(t)
	tests := []struct {
		name    string
		archive bool
		build   func(b builder)
		ref     string
		tree    string // relative to the sysroot; default "stage"
		want    string
	}{
		{name: "tree contains the repository", tree: ".", want: "overlap"},
		{name: "tree inside the repository", tree: "ostree/repo/tmp/stage", want: "overlap"},
		{name: "archive repository", archive: true, want: "only bare repositories"},
		{name: "invalid ref", ref: "../evil", want: "invalid ref name"},
		{name: "fifo", build: func(b builder) {
			if err := unix.Mkfifo(b.p("fifo"), 0o644); err != nil {
				b.t.Fatal(err)
			}
		}, want: "unsupported file type"},
		{name: "non-UTF-8 name", build: func(b builder) { b.file("bad\xff", nil, 0o644, 0, 0) }, want: "not valid UTF-8"},
		{name: "non-UTF-8 symlink target", build: func(b builder) { b.symlink("l", "\xfe", 0, 0) }, want: "not valid UTF-8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			repo := newRepo(t, filepath.Join(tmp, "sys"))
			if tc.archive {
				repo = filepath.Join(tmp, "archive")
				run(t, "ostree", "init", "--mode=archive", "--repo="+repo)
			}
			rel := tc.tree
			if rel == "" {
				rel = "stage"
			}
			stage := build(t, filepath.Join(tmp, "sys", rel), func(b builder) {
				b.file("ok", []byte("ok"), 0o644, 0, 0)
				if tc.build != nil {
					tc.build(b)
				}
			})
			opts := baseOptions()
			if tc.ref != "" {
				opts.Branch = tc.ref
			}
			_, err := Commit(context.Background(), repo, stage, opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(repo, "refs", "heads", baseOptions().Branch)); !os.IsNotExist(err) {
				t.Errorf("a ref was written despite the error")
			}
		})
	}
}

func TestCommitCanceled(t *testing.T) {
	requireOstreeRoot(t)
	tmp := t.TempDir()
	repo := newRepo(t, filepath.Join(tmp, "sys"))
	stage := build(t, filepath.Join(tmp, "sys", "stage"), treeCases[1].build)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Commit(ctx, repo, stage, baseOptions())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if _, err := os.Stat(filepath.Join(repo, "refs", "heads", baseOptions().Branch)); !os.IsNotExist(err) {
		t.Errorf("a ref was written for a canceled commit")
	}
}
