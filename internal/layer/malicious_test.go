package layer

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bootlace/bootlace/internal/errs"
	lt "github.com/bootlace/bootlace/internal/layer/layertest"
)

// Layout of every hostile case: base/root is the staging root, base/canary
// a directory next to it that nothing may touch.
const (
	canaryName = "canary"
	canaryBody = "canary contents\n"
)

type hostileCase struct {
	name string
	opts Options
	// layers builds the raw layers; canary is the absolute path of the
	// canary directory, for absolute symlinks aimed at it.
	layers func(tb testing.TB, canary string) [][]byte
	// wantErr is a substring of the expected error; "" means the layer must
	// apply and the result be confined.
	wantErr string
	check   func(t *testing.T, root string)
}

func one(entries ...lt.Entry) func(testing.TB, string) [][]byte {
	return func(tb testing.TB, _ string) [][]byte { return [][]byte{lt.MustTar(tb, entries...)} }
}

func raw(layers ...[]byte) func(testing.TB, string) [][]byte {
	return func(testing.TB, string) [][]byte { return layers }
}

func mustGzip(tb testing.TB, b []byte) []byte {
	tb.Helper()
	z, err := lt.Gzip(b)
	if err != nil {
		tb.Fatal(err)
	}
	return z
}

func mustZstd(tb testing.TB, b []byte) []byte {
	tb.Helper()
	z, err := lt.Zstd(b)
	if err != nil {
		tb.Fatal(err)
	}
	return z
}

func wantFile(p, body string) func(*testing.T, string) {
	return func(t *testing.T, root string) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil || string(b) != body {
			t.Errorf("%s = %q, %v; want %q", p, b, err, body)
		}
		if fi, err := os.Lstat(filepath.Join(root, p)); err == nil && !fi.Mode().IsRegular() {
			t.Errorf("%s is %v, want a regular file", p, fi.Mode())
		}
	}
}

func wantAbsent(ps ...string) func(*testing.T, string) {
	return func(t *testing.T, root string) {
		t.Helper()
		for _, p := range ps {
			if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
				t.Errorf("%s exists, want it absent", p)
			}
		}
	}
}

func all(fs ...func(*testing.T, string)) func(*testing.T, string) {
	return func(t *testing.T, root string) {
		for _, f := range fs {
			f(t, root)
		}
	}
}

// hostileCases is the regression corpus of crafted layers; FuzzApply is
// seeded from it too.
func hostileCases() []hostileCase {
	long := strings.Repeat("x", 256)
	bomb := lt.Entry{Name: "bomb", Type: tar.TypeReg, Body: make([]byte, 64<<20)}
	return []hostileCase{
		{name: "dotdot file", layers: one(lt.File("../canary/file", "pwned")), wantErr: `".."`},
		{name: "dotdot in the middle", layers: one(lt.File("a/../../canary/new", "pwned")), wantErr: `".."`},
		{name: "dotdot directory", layers: one(lt.Dir("../canary/dir2")), wantErr: `".."`},
		{name: "absolute name stays inside", layers: one(lt.File("/canary/file", "inside")), check: wantFile("canary/file", "inside")},
		{
			name: "symlink to the canary then write through it, same layer",
			layers: func(tb testing.TB, canary string) [][]byte {
				return [][]byte{lt.MustTar(tb, lt.Symlink("esc", canary), lt.File("esc/file", "pwned"))}
			},
			wantErr: "no such file or directory",
		},
		{
			name: "relative symlink escape from an earlier layer",
			layers: func(tb testing.TB, _ string) [][]byte {
				return [][]byte{
					lt.MustTar(tb, lt.Symlink("esc", "../canary")),
					lt.MustTar(tb, lt.Dir("canary"), lt.File("esc/file", "inside")),
				}
			},
			check: wantFile("canary/file", "inside"),
		},
		{
			name:   "symlink to / then write host paths",
			layers: one(lt.Symlink("rootlink", "/"), lt.File("rootlink/etc/passwd", "inside")),
			check:  wantFile("etc/passwd", "inside"),
		},
		{
			name:    "symlink to / with the target dir present",
			layers:  one(lt.Dir("etc"), lt.Symlink("rootlink", "/"), lt.File("rootlink/etc/passwd", "inside"), lt.File("rootlink/../../canary/file", "x")),
			wantErr: `".."`,
		},
		{
			name: "symlink chain out of the root",
			layers: func(tb testing.TB, canary string) [][]byte {
				return [][]byte{
					lt.MustTar(tb, lt.Symlink("a", "b"), lt.Symlink("b", "c/../d"), lt.Dir("c"), lt.Symlink("d", "../../../../.."+canary)),
					lt.MustTar(tb, lt.Dir(canary), lt.File("a/file", "inside")),
				}
			},
			check: func(t *testing.T, root string) {
				// The chain ends at the canary's path taken inside the root.
				wantFile(filepath.Join(canaryIn(root), "file"), "inside")(t, root)
			},
		},
		{name: "symlink to a /proc magic link", layers: one(lt.Symlink("m", "/proc/self/root"), lt.File("m/etc/x", "x")), wantErr: "no such file or directory"},
		{
			name: "hardlink to an escaping symlink, then a file over the hardlink",
			layers: func(tb testing.TB, canary string) [][]byte {
				return [][]byte{
					lt.MustTar(tb, lt.Symlink("s", canary+"/file"), lt.Hardlink("h", "s")),
					lt.MustTar(tb, lt.File("h", "replaced")),
				}
			},
			check: wantFile("h", "replaced"),
		},
		{
			name:   "whiteout-looking directory components are plain names",
			layers: one(lt.File("a/.wh.b/c", "c"), lt.File(".wh..wh..opq/x", "x")),
			check:  all(wantFile("a/.wh.b/c", "c"), wantFile(".wh..wh..opq/x", "x")),
		},
		{name: "symlink loop", layers: one(lt.Symlink("a", "b"), lt.Symlink("b", "a"), lt.File("a/x", "x")), wantErr: "too many levels of symbolic links"},
		{
			name: "final-component symlink is replaced, not followed",
			layers: func(tb testing.TB, canary string) [][]byte {
				return [][]byte{
					lt.MustTar(tb, lt.Symlink("file", canary+"/file"), lt.Symlink("dir", canary+"/dir")),
					lt.MustTar(tb, lt.File("file", "replaced").WithMode(0o600), lt.Dir("dir").WithMode(0o700)),
				}
			},
			check: all(wantFile("file", "replaced"), func(t *testing.T, root string) {
				if fi, err := os.Lstat(filepath.Join(root, "dir")); err != nil || !fi.IsDir() {
					t.Errorf("dir: %v %v", fi, err)
				}
			}),
		},
		{
			name: "hardlink onto a symlinked name does not write through",
			layers: func(tb testing.TB, canary string) [][]byte {
				return [][]byte{lt.MustTar(tb, lt.File("src", "inside"), lt.Symlink("dst", canary+"/file"), lt.Hardlink("dst", "src"))}
			},
			check: wantFile("dst", "inside"),
		},
		{name: "hardlink to the host's /etc/passwd", layers: one(lt.Hardlink("passwd", "/etc/passwd")), wantErr: "hardlink target /etc/passwd does not exist"},
		{name: "hardlink to ../outside", layers: one(lt.Hardlink("h", "../canary/file")), wantErr: `".."`},
		{name: "hardlink to a missing target", layers: one(lt.Dir("usr"), lt.Hardlink("h", "usr/missing")), wantErr: "hardlink target /usr/missing does not exist"},
		{
			name: "hardlink through a symlinked directory",
			layers: func(tb testing.TB, canary string) [][]byte {
				return [][]byte{lt.MustTar(tb, lt.Symlink("esc", canary), lt.Hardlink("h", "esc/file"))}
			},
			wantErr: "hardlink target /esc/file does not exist",
		},
		{name: "hardlink to a directory", layers: one(lt.Dir("d"), lt.Hardlink("h", "d")), wantErr: "is a directory"},
		{name: "hardlink to the root", layers: one(lt.Hardlink("h", "./")), wantErr: "hardlink to the root"},
		{name: "whiteout with dotdot", layers: one(lt.File("../.wh.canary", "")), wantErr: `".."`},
		{name: "whiteout of dotdot", layers: one(lt.Dir("d"), lt.File("d/.wh...", "")), wantErr: `invalid whiteout ".wh..."`},
		{name: "whiteout of dot", layers: one(lt.File(".wh..", "")), wantErr: `invalid whiteout ".wh.."`},
		{
			name: "whiteout through a symlink to the canary",
			layers: func(tb testing.TB, canary string) [][]byte {
				return [][]byte{
					lt.MustTar(tb, lt.Symlink("esc", canary), lt.Symlink("rel", "../canary"),
						lt.Dir(canary), lt.File(canary+"/file", "in"), lt.Dir(canary+"/dir"),
						lt.Dir("canary"), lt.File("canary/file", "in"), lt.Dir("canary/dir")),
					lt.MustTar(tb, lt.File("esc/.wh.file", ""), lt.Opaque("esc"), lt.File("rel/.wh.file", ""), lt.Opaque("rel")),
				}
			},
			// The whiteouts land on the copies inside the root.
			check: func(t *testing.T, root string) {
				wantAbsent(canaryIn(root)+"/file", canaryIn(root)+"/dir", "canary/file", "canary/dir")(t, root)
				if _, err := os.Lstat(filepath.Join(root, "canary")); err != nil {
					t.Errorf("the opaque directory itself was removed: %v", err)
				}
			},
		},
		{
			name: "whiteout of a symlink removes the link only",
			layers: func(tb testing.TB, canary string) [][]byte {
				return [][]byte{lt.MustTar(tb, lt.Symlink("esc", canary)), lt.MustTar(tb, lt.Whiteout("esc"))}
			},
			check: wantAbsent("esc"),
		},
		{
			name: "opaque at root",
			layers: func(tb testing.TB, canary string) [][]byte {
				return [][]byte{
					lt.MustTar(tb, lt.File("a", "a"), lt.Symlink("esc", canary)),
					lt.MustTar(tb, lt.Opaque("./"), lt.File("b", "b")),
				}
			},
			check: all(wantFile("b", "b"), wantAbsent("a", "esc")),
		},
		{name: "character device", layers: one(lt.CharDev("dev/mem", 1, 1), lt.CharDev("canary-dev", 1, 3)), check: wantAbsent("dev/mem", "canary-dev")},
		{name: "block device", layers: one(lt.Entry{Name: "sda", Type: tar.TypeBlock, Devmajor: 8}), check: wantAbsent("sda")},
		{name: "fifo", layers: one(lt.Fifo("fifo")), check: wantAbsent("fifo")},
		{name: "duplicate entries", layers: one(lt.File("x", "1"), lt.Dir("x"), lt.File("x/y", "y"), lt.File("x", "2")), check: all(wantFile("x", "2"), wantAbsent("x/y"))},
		{
			name: "directory replaced by an escaping symlink then written through",
			layers: func(tb testing.TB, canary string) [][]byte {
				return [][]byte{
					lt.MustTar(tb, lt.Dir("d"), lt.File("d/f", "f"), lt.Dir(canary)),
					lt.MustTar(tb, lt.Symlink("d", canary), lt.File("d/file", "inside")),
				}
			},
			check: func(t *testing.T, root string) {
				wantAbsent("d/f")(t, root)
			},
		},
		{
			name:   "same-layer dir to symlink swap keeps writes inside",
			layers: one(lt.Dir("d"), lt.File("d/f", "f"), lt.Dir("e"), lt.Symlink("d", "../../canary"), lt.Dir("canary"), lt.File("d/g", "g")),
			check:  all(wantFile("canary/g", "g"), wantAbsent("e/g")),
		},
		{name: "over-long component", layers: one(lt.File(long, "x")), wantErr: "256-byte component"},
		{name: "over-long path", layers: one(lt.File(strings.Repeat("a/", 2100)+"x", "x")), wantErr: "path limit"},
		{name: "over-long hardlink target", layers: one(lt.Hardlink("h", long)), wantErr: "256-byte component"},
		{name: "NUL in a PAX path", layers: raw(paxNameWithNUL()), wantErr: "tar"},
		{name: "empty name", layers: raw(headerOnly(&tar.Header{Name: "", Typeflag: tar.TypeReg, Mode: 0o644})), wantErr: "empty entry name"},
		{name: "regular file named dot", layers: one(lt.File(".", "x")), wantErr: "cannot replace the root"},
		{name: "symlink named slash", layers: one(lt.Symlink("/", "/etc")), wantErr: "cannot replace the root"},
		{name: "size larger than the data (truncated)", layers: one(lt.File("a", "ok"), lt.Entry{Name: "t", Body: []byte("short"), Size: 4096}), wantErr: "truncated"},
		{name: "size smaller than the data", layers: one(lt.Entry{Name: "s", Body: bytes.Repeat([]byte("garbage!"), 200), Size: 10}, lt.File("after", "a")), wantErr: "reading tar stream"},
		{
			name: "truncated header",
			layers: func(tb testing.TB, _ string) [][]byte {
				return [][]byte{lt.MustTar(tb, lt.File("a", "a"), lt.File("b", "b"))[:1200]}
			},
			wantErr: "reading tar stream",
		},
		{
			name:    "gzip decompression bomb",
			opts:    Options{MaxBytes: 1 << 20},
			layers:  func(tb testing.TB, _ string) [][]byte { return [][]byte{mustGzip(tb, lt.MustTar(tb, bomb))} },
			wantErr: "layer exceeds its size bound",
		},
		{
			name: "zstd bomb in many small files",
			opts: Options{MaxBytes: 1 << 20},
			layers: func(tb testing.TB, _ string) [][]byte {
				return [][]byte{mustZstd(tb, lt.MustTar(tb, lt.Many("m", 400, 100, 8192)...))}
			},
			wantErr: "layer exceeds its size bound",
		},
		{
			name:    "declared size over the bound",
			opts:    Options{MaxBytes: 1 << 20},
			layers:  raw(headerOnly(&tar.Header{Name: "huge", Typeflag: tar.TypeReg, Size: 1 << 40, Mode: 0o644})),
			wantErr: "entry declares",
		},
		{name: "garbage bytes", layers: raw(bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 1000)), wantErr: "reading tar stream"},
		{name: "gzip magic then garbage", layers: raw(append([]byte{0x1f, 0x8b, 8, 0}, bytes.Repeat([]byte{0x55}, 600)...)), wantErr: "corrupt input"},
		{name: "negative owner", layers: raw(headerOnly(&tar.Header{Name: "o", Typeflag: tar.TypeReg, Uid: -5, Mode: 0o644, Format: tar.FormatPAX})), wantErr: "invalid owner -5:0"},
		{name: "overlay redirect xattr", layers: one(lt.Dir("d").WithXattr("trusted.overlay.redirect", "/../canary")), check: func(t *testing.T, root string) {
			if _, err := unix.Lgetxattr(filepath.Join(root, "d"), "trusted.overlay.redirect", make([]byte, 64)); err == nil {
				t.Error("trusted.overlay.redirect was set")
			}
		}},
		{name: "unknown entry type", layers: one(lt.Entry{Name: "v", Type: 'V'}), wantErr: "unsupported tar entry type"},
		{name: "empty symlink target", layers: one(lt.Symlink("l", "")), wantErr: "empty target"},
	}
}

// paxNameWithNUL crafts a PAX header whose path record contains a NUL.
func paxNameWithNUL() []byte {
	var buf bytes.Buffer
	rec := "a\x00b"
	body := paxRecord("path", rec)
	hdr := ustarBlock("PaxHeaders/x", 'x', int64(len(body)))
	buf.Write(hdr)
	buf.WriteString(body)
	buf.Write(make([]byte, 512-len(body)%512))
	buf.Write(ustarBlock("plain", '0', 0))
	buf.Write(make([]byte, 1024))
	return buf.Bytes()
}

func paxRecord(k, v string) string {
	n := len(k) + len(v) + 3
	for {
		s := strconv.Itoa(n) + " " + k + "=" + v + "\n"
		if len(s) == n {
			return s
		}
		n = len(s)
	}
}

// ustarBlock writes a raw ustar header block with a valid checksum.
func ustarBlock(name string, typ byte, size int64) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:108], "0000644\x00")
	copy(b[108:116], "0000000\x00")
	copy(b[116:124], "0000000\x00")
	copy(b[124:136], octal(size, 11)+"\x00")
	copy(b[136:148], "00000000000\x00")
	b[156] = typ
	copy(b[257:263], "ustar\x00")
	copy(b[263:265], "00")
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], octal(int64(sum), 6)+"\x00 ")
	return b
}

func octal(v int64, width int) string {
	s := ""
	for i := 0; i < width; i++ {
		s = string(rune('0'+v%8)) + s
		v /= 8
	}
	return s
}

// headerOnly writes one header (no data, no end marker) with archive/tar,
// ignoring its refusal to finish an entry whose data is missing.
func headerOnly(h *tar.Header) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(h); err != nil {
		return []byte("unwritable header: " + err.Error())
	}
	return buf.Bytes()
}

// canaryState records the canary next to the root and the host's /etc/passwd.
func canaryState(t *testing.T, base string) string {
	t.Helper()
	pw, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	return canaryOnly(t, base) + "passwd " + string(sha256Sum(pw))
}

func sha256Sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

// canaryIn is the canary's absolute path, relative to root: where absolute
// symlinks aimed at the canary really lead.
func canaryIn(root string) string {
	return strings.TrimPrefix(filepath.Join(filepath.Dir(root), canaryName), "/")
}

func newCanaryBase(t *testing.T) (base, root string) {
	t.Helper()
	base = t.TempDir()
	root = filepath.Join(base, "root")
	for _, d := range []string{root, filepath.Join(base, canaryName, "dir")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(base, canaryName, "file"), []byte(canaryBody), 0o644); err != nil {
		t.Fatal(err)
	}
	return base, root
}

func TestHostileLayers(t *testing.T) {
	cases := hostileCases()
	if len(cases) < 25 {
		t.Fatalf("only %d hostile cases", len(cases))
	}
	seen := map[string]bool{}
	for _, tc := range cases {
		if seen[tc.name] {
			t.Fatalf("duplicate case name %q", tc.name)
		}
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			base, root := newCanaryBase(t)
			before := canaryState(t, base)
			canary := filepath.Join(base, canaryName)
			_, _, err := applyAll(root, tc.opts, tc.layers(t, canary)...)
			if after := canaryState(t, base); after != before {
				t.Errorf("the canary outside the root changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("want a confined result, got error %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("want an error containing %q, got success", tc.wantErr)
			case tc.wantErr != "":
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error %q does not contain %q", err, tc.wantErr)
				}
				var e *errs.Error
				if !errors.As(err, &e) {
					t.Errorf("error %v is not classified", err)
				} else if e.Kind != errs.Image {
					t.Errorf("error kind %v, want image-not-installable", e.Kind)
				}
			}
			if tc.check != nil && err == nil {
				tc.check(t, root)
			}
		})
	}
}
