package install

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/fetch"
	"github.com/bootlace/bootlace/internal/layer/layertest"
	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

func TestBootstrapKeep(t *testing.T) {
	tests := map[string]bool{
		"usr":                                true,
		"bin":                                true,
		"usr/sbin/mkfs.ext4":                 true,
		"usr/sbin/mke2fs":                    true,
		"usr/sbin/mkfs.xfs":                  true,
		"usr/sbin/fsck.ext4":                 false,
		"usr/bin/bash":                       false,
		"usr/lib/x86_64-linux-gnu/libc.so.6": true,
		"usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2": true,
		"usr/lib64/ld-linux-x86-64.so.2":                true,
		"usr/lib/x86_64-linux-gnu/perl/5.36/x.so":       false,
		"usr/lib/modules/6.1.0/kernel/fs/ext4.ko":       false,
		"usr/lib/bootc/install/00-x.toml":               true,
		"usr/lib/bootc/kargs.d/10-x.toml":               true,
		"etc/bootc/install/x.toml":                      true,
		"etc/mke2fs.conf":                               true,
		"etc/shadow":                                    false,
		"usr/share/doc/x":                               false,
	}
	for name, want := range tests {
		if got := bootstrapKeep(name); got != want {
			t.Errorf("bootstrapKeep(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestCleanName(t *testing.T) {
	for in, want := range map[string]string{"./usr/bin/x": "usr/bin/x", "/etc/": "etc", "usr//lib/../lib/a": "usr/lib/a", "./": ""} {
		if got := cleanName(in); got != want {
			t.Errorf("cleanName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFilterTar(t *testing.T) {
	raw, err := layertest.Tar(
		layertest.Dir("./usr/"),
		layertest.File("./usr/sbin/mkfs.ext4", "mkfs"),
		layertest.File("./usr/bin/bash", "bash"),
		layertest.File("./usr/lib/modules/6.1.0-1/vmlinuz", "kernel"),
		layertest.File("./usr/lib/modules/6.1.0-2/vmlinuz", "kernel"),
		layertest.Whiteout("./usr/lib/modules/6.1.0-2/vmlinuz"),
		layertest.Whiteout("./usr/sbin/mkfs.btrfs"),
		layertest.Hardlink("./usr/sbin/mke2fs", "./usr/sbin/mkfs.ext4"),
		layertest.Hardlink("./usr/sbin/mkfs.ext4dev", "./usr/bin/bash"),
	)
	if err != nil {
		t.Fatal(err)
	}
	kernels := map[string]bool{}
	rc := filterTar(context.Background(), bytes.NewReader(raw), bootstrapKeep, kernels)
	defer rc.Close()
	tr := tar.NewReader(rc)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	want := []string{"./usr/", "./usr/sbin/mkfs.ext4", "./usr/sbin/.wh.mkfs.btrfs", "./usr/sbin/mke2fs"}
	if !equal(names, want) {
		t.Errorf("kept %v, want %v", names, want)
	}
	var ks []string
	for k := range kernels {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	if !equal(ks, []string{"usr/lib/modules/6.1.0-1/vmlinuz"}) {
		t.Errorf("kernels %v", ks)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCheckKernel(t *testing.T) {
	if k, err := checkKernel([]string{"usr/lib/modules/6.1.0-9-amd64/vmlinuz"}, "x"); err != nil || k != "6.1.0-9-amd64" {
		t.Errorf("one kernel: %q %v", k, err)
	}
	for _, ks := range [][]string{nil, {"usr/lib/modules/a/vmlinuz", "usr/lib/modules/b/vmlinuz"}} {
		_, err := checkKernel(ks, "x")
		if errs.KindOf(err) != errs.Image {
			t.Errorf("%v: got %v, want an image error", ks, err)
		}
	}
}

func TestCheckEmptyRoot(t *testing.T) {
	tests := []struct {
		name  string
		setup []string // dirs, or files when they end in ".f"
		ok    bool
	}{
		{"empty", nil, true},
		{"lost+found", []string{"lost+found"}, true},
		{"boot with efi", []string{"boot/efi", "boot/lost+found"}, true},
		{"own work dir", []string{workDirName + "/store"}, true},
		{"stray dir", []string{"home"}, false},
		{"boot with content", []string{"boot/grub"}, false},
		{"stray file", []string{"x.f"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for _, p := range tt.setup {
				if filepath.Ext(p) == ".f" {
					if err := os.WriteFile(filepath.Join(root, p), nil, 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				if err := os.MkdirAll(filepath.Join(root, p), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			err := checkEmptyRoot(root, false)
			if (err == nil) != tt.ok {
				t.Fatalf("checkEmptyRoot = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && errs.KindOf(err) != errs.Target {
				t.Fatalf("error kind %v, want target", errs.KindOf(err))
			}
		})
	}
}

func TestJournal(t *testing.T) {
	dir := t.TempDir()
	j, err := openJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	j.forImage("sha256:a")
	if err := j.mark("fetch"); err != nil {
		t.Fatal(err)
	}
	j2, err := openJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	j2.forImage("sha256:a")
	if !j2.done("fetch") || j2.done("deploy") {
		t.Fatalf("reloaded journal %+v", j2.Data)
	}
	j2.forImage("sha256:b")
	if j2.done("fetch") {
		t.Fatal("journal of another image kept its phases")
	}
	if err := os.WriteFile(filepath.Join(dir, "journal.json"), []byte("{torn"), 0o600); err != nil {
		t.Fatal(err)
	}
	j3, err := openJournal(dir)
	if err != nil || j3.done("fetch") {
		t.Fatalf("torn journal: %v %+v", err, j3.Data)
	}
}

func TestSpaceCheck(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a small tmpfs and needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=16m"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(dir, 0)
	store, err := fetch.OpenStore(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	im := func(size int64) *fetch.Image {
		return &fetch.Image{Layers: []fetch.Layer{{Digest: "sha256:0000000000000000000000000000000000000000000000000000000000000000", Size: size}}}
	}
	if err := spaceCheck(dir, im(1<<20), store); err != nil {
		t.Errorf("1 MiB image on 16 MiB: %v", err)
	}
	err = spaceCheck(dir, im(100<<20), store)
	if errs.KindOf(err) != errs.Target || !strings.Contains(err.Error(), "MiB free") {
		t.Errorf("100 MiB image on 16 MiB: %v", err)
	}
}

func TestCheckDetected(t *testing.T) {
	cfg := []byte(`{"architecture":"amd64"}`)
	id := digest.FromBytes(cfg).Encoded()
	im := &fetch.Image{ConfigJSON: cfg}
	tests := []struct {
		name string
		d    *SourceDetection
		ok   bool
	}{
		{"explicit source", nil, true},
		{"the container's image", &SourceDetection{ImageID: id, Storage: "/var/lib/containers/storage"}, true},
		{"another image", &SourceDetection{ImageID: strings.Repeat("0", 64), Storage: "/var/lib/containers/storage"}, false},
	}
	for _, tc := range tests {
		err := checkDetected(im, tc.d)
		if (err == nil) != tc.ok {
			t.Errorf("%s: error %v", tc.name, err)
		}
		if err != nil && errs.KindOf(err) != errs.Fetch {
			t.Errorf("%s: kind %v, want fetch", tc.name, errs.KindOf(err))
		}
	}
}

func TestToolViewSkip(t *testing.T) {
	for rel, want := range map[string]bool{
		"usr/include": true, "usr/src": true, "usr/lib/modules": true, "usr/share/doc": true,
		"usr/share/go-1.19": true, "usr/lib/python3": true, "usr/lib/python3.11": true,
		"usr/share/ostree": false, "usr/lib/ostree": false, "usr/lib/x86_64-linux-gnu": false,
		"usr/bin": false, "usr/etc": false, "usr/share": false, "usr/lib": false, "usr/etc/selinux": false,
		"usr/lib/x86_64-linux-gnu/gio": false,
	} {
		if got := toolViewSkip(rel); got != want {
			t.Errorf("toolViewSkip(%q) = %v, want %v", rel, got, want)
		}
	}
}
