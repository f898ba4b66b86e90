package layertest

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
)

func read(t *testing.T, data []byte) ([]*tar.Header, error) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	var hs []*tar.Header
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hs, nil
		}
		if err != nil {
			return hs, err
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return hs, err
		}
		hs = append(hs, h)
	}
}

func TestTar(t *testing.T) {
	data := MustTar(t,
		Dir("d"), File("d/f", "body").WithMode(0o4755).WithOwner(1, 2).WithXattr("user.a", "b"),
		Symlink("l", "d/f"), Hardlink("h", "d/f"), Whiteout("d/gone"), Opaque("d"), Fifo("p"), CharDev("c", 1, 3),
		File("zero", "").WithMode(0),
	)
	hs, err := read(t, data)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name string
		typ  byte
		mode int64
	}{
		{"d", tar.TypeDir, 0o755}, {"d/f", tar.TypeReg, 0o4755}, {"l", tar.TypeSymlink, 0o777}, {"h", tar.TypeLink, 0o644},
		{"d/.wh.gone", tar.TypeReg, 0o644}, {"d/.wh..wh..opq", tar.TypeReg, 0o644}, {"p", tar.TypeFifo, 0o644},
		{"c", tar.TypeChar, 0o644}, {"zero", tar.TypeReg, 0},
	}
	if len(hs) != len(want) {
		t.Fatalf("%d entries, want %d", len(hs), len(want))
	}
	for i, w := range want {
		if hs[i].Name != w.name || hs[i].Typeflag != w.typ || hs[i].Mode != w.mode {
			t.Errorf("entry %d = %s %c %o, want %s %c %o", i, hs[i].Name, hs[i].Typeflag, hs[i].Mode, w.name, w.typ, w.mode)
		}
	}
	if hs[1].Uid != 1 || hs[1].Gid != 2 || hs[1].PAXRecords["SCHILY.xattr.user.a"] != "b" {
		t.Errorf("d/f header %+v", hs[1])
	}
}

func TestTarCrafted(t *testing.T) {
	trunc := MustTar(t, File("a", "a"), Entry{Name: "t", Body: []byte("short"), Size: 100}, File("never", ""))
	if _, err := read(t, trunc); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated archive read: %v", err)
	}
	long := MustTar(t, Entry{Name: "s", Body: bytes.Repeat([]byte("z"), 700), Size: 10})
	if _, err := read(t, long); err == nil {
		t.Error("archive with data beyond the header size read cleanly")
	}
}

func TestCompress(t *testing.T) {
	data := MustTar(t, Many("x", 50, 10, 100)...)
	gz, err := Gzip(data)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := pgzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(zr); err != nil || !bytes.Equal(got, data) {
		t.Errorf("gzip round trip: %v", err)
	}
	zs, err := Zstd(data)
	if err != nil {
		t.Fatal(err)
	}
	d, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got, err := d.DecodeAll(zs, nil); err != nil || !bytes.Equal(got, data) {
		t.Errorf("zstd round trip: %v", err)
	}
}

func TestSnapshot(t *testing.T) {
	dir := t.TempDir()
	s, err := Snapshot(dir)
	if err != nil || len(s) != 0 {
		t.Fatalf("empty dir snapshot = %v, %v", s, err)
	}
}
