package install

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"strings"
)

// To make filesystems on a disk, to-disk needs the image's mkfs before the
// target filesystem (and so the blob store) exists. It therefore streams the
// layers once into a small tmpfs, keeping only what that takes: the mkfs
// tools, the shared libraries beside them, and the configuration that
// decides the layout. Everything else is fetched later into the store on the
// new filesystem.

var libDir = regexp.MustCompile(`^(usr/)?lib(32|64)?/([^/]*-linux-gnu[^/]*/)?$`)

// bootstrapConfig are the trees and files read from the image before the
// disk is partitioned.
var bootstrapConfig = []string{
	"usr/lib/bootc", "usr/local/lib/bootc", "etc/bootc", "usr/lib/ostree", "etc/ostree",
	"etc/selinux", "usr/share/containers/systemd", "etc/containers/systemd", "etc/os-release", "usr/lib/os-release", "etc/mke2fs.conf",
	"etc/ld.so.cache", "etc/passwd", "etc/group",
}

func bootstrapKeep(name string) bool {
	if !strings.Contains(name, "/") {
		return true // top-level dirs and the bin -> usr/bin style links
	}
	for _, p := range bootstrapConfig {
		if name == p || strings.HasPrefix(name, p+"/") {
			return true
		}
	}
	dir, base := path.Split(name)
	switch dir {
	case "usr/sbin/", "sbin/", "usr/bin/", "bin/":
		return strings.HasPrefix(base, "mkfs.") || strings.HasPrefix(base, "mke2fs")
	}
	if libDir.MatchString(dir) {
		return strings.Contains(base, ".so")
	}
	return false
}

// cleanName strips the "./" or "/" prefixes layer tars use.
func cleanName(n string) string {
	n = strings.TrimPrefix(n, "./")
	n = strings.TrimLeft(n, "/")
	return strings.TrimSuffix(path.Clean("/" + n)[1:], "/")
}

var kernelPath = regexp.MustCompile(`^usr/lib/modules/[^/]+/vmlinuz$`)

// filterTar copies the entries of a layer that keep accepts into a new tar
// stream. Whiteouts follow the path they delete. It also reports every
// kernel path it sees, so a missing kernel is caught before the disk is
// touched.
func filterTar(ctx context.Context, r io.Reader, keep func(string) bool, kernels map[string]bool) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(copyFiltered(ctx, r, pw, keep, kernels))
	}()
	return pr
}

func copyFiltered(ctx context.Context, r io.Reader, w io.Writer, keep func(string) bool, kernels map[string]bool) error {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return tw.Close()
		}
		if err != nil {
			return fmt.Errorf("reading layer: %w", err)
		}
		name := cleanName(hdr.Name)
		dir, base := path.Split(name)
		target := name
		if strings.HasPrefix(base, ".wh.") {
			if base == ".wh..wh..opq" {
				target = dir + "x"
			} else {
				target = dir + strings.TrimPrefix(base, ".wh.")
			}
			if kernelPath.MatchString(target) {
				delete(kernels, target)
			}
		} else if kernelPath.MatchString(name) {
			kernels[name] = true
		}
		if !keep(target) {
			continue
		}
		if hdr.Typeflag == tar.TypeLink && !keep(cleanName(hdr.Linkname)) {
			continue
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := io.Copy(tw, tr); err != nil {
				return fmt.Errorf("copying %s: %w", name, err)
			}
		}
	}
}
