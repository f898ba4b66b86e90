package layer

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/bootlace/bootlace/internal/errs"
	lt "github.com/bootlace/bootlace/internal/layer/layertest"
)

func TestDecompress(t *testing.T) {
	plain := lt.MustTar(t, lt.File("a", strings.Repeat("hello ", 1000)))
	gz := mustGzip(t, plain)
	zs := mustZstd(t, plain)
	cases := []struct {
		name, mediaType string
		blob            []byte
		wantErr         string
	}{
		{"oci tar", "application/vnd.oci.image.layer.v1.tar", plain, ""},
		{"oci gzip", "application/vnd.oci.image.layer.v1.tar+gzip", gz, ""},
		{"oci zstd", "application/vnd.oci.image.layer.v1.tar+zstd", zs, ""},
		{"oci nondistributable gzip", "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", gz, ""},
		{"docker gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip", gz, ""},
		{"docker foreign gzip", "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", gz, ""},
		{"sniffed gzip", "", gz, ""},
		{"sniffed zstd", "", zs, ""},
		{"sniffed tar", "", plain, ""},
		{"gzip labelled as tar", "application/vnd.oci.image.layer.v1.tar", gz, ""},
		{"zstd labelled as tar", "application/vnd.docker.image.rootfs.diff.tar", zs, ""},
		{"media type with parameters", "application/vnd.oci.image.layer.v1.tar+zstd; foo=bar", zs, ""},
		{"tar labelled as gzip", "application/vnd.oci.image.layer.v1.tar+gzip", plain, "gzip"},
		{"encrypted", "application/vnd.oci.image.layer.v1.tar+gzip+encrypted", gz, "encrypted"},
		{"xz", "", []byte("\xfd7zXZ\x00rest"), "xz-compressed"},
		{"bzip2", "", []byte("BZh91AY&SY"), "bzip2-compressed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := Decompress(bytes.NewReader(tc.blob), tc.mediaType)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || errs.KindOf(err) != errs.Image {
					t.Fatalf("Decompress = %v, want an image error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatalf("decompressed %d bytes, want the %d-byte tar", len(got), len(plain))
			}
		})
	}
}

func TestCleanName(t *testing.T) {
	cases := []struct{ in, want, err string }{
		{"./usr/bin/x", "usr/bin/x", ""},
		{"/usr/bin/x", "usr/bin/x", ""},
		{"usr//bin/./x/", "usr/bin/x", ""},
		{".", "", ""},
		{"./", "", ""},
		{"/", "", ""},
		{"", "", "empty"},
		{"a/../b", "", `".."`},
		{"..", "", `".."`},
		{"a\x00b", "", "NUL"},
		{strings.Repeat("x", 256), "", "256-byte component"},
		{strings.Repeat("x", 255), strings.Repeat("x", 255), ""},
		{strings.Repeat("ab/", 1366), "", "path limit"},
		{"...", "...", ""},
		{"..a/b..", "..a/b..", ""},
	}
	for _, tc := range cases {
		got, err := cleanName(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("cleanName(%.40q) = %q, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("cleanName(%.40q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestOstreeMap(t *testing.T) {
	cases := []struct {
		in, want string
		keep     bool
	}{
		{"etc", "usr/etc", true},
		{"etc/passwd", "usr/etc/passwd", true},
		{"etcetera/x", "etcetera/x", true},
		{"usr/etc/x", "usr/etc/x", true},
		{"run", "run", true},
		{"run/foo", "", false},
		{"tmp/a/b", "", false},
		{"proc/1", "", false},
		{"sys/x", "", false},
		{"dev/null", "", false},
		{"var/run", "var/run", true},
		{"", "", true},
	}
	for _, tc := range cases {
		got, keep := ostreeMap(tc.in)
		if keep != tc.keep || (keep && got != tc.want) {
			t.Errorf("ostreeMap(%q) = %q, %v; want %q, %v", tc.in, got, keep, tc.want, tc.keep)
		}
	}
}
