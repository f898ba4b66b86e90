package grub

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/bootlace/bootlace/internal/errs"
)

// syntheticCore returns a core.img the way grub-mkimage leaves it: a
// pattern, and in the first sector's last 12 bytes the placeholder
// blocklist {start 2, len N-1, segment 0x820}.
func syntheticCore(size int) []byte {
	core := make([]byte, size)
	for i := range core {
		core[i] = byte(i*7 + 3)
	}
	n := (size + 511) / 512
	clear(core[0x1E8:0x200])
	binary.LittleEndian.PutUint64(core[0x1F4:], 2)
	binary.LittleEndian.PutUint16(core[0x1FC:], uint16(n-1))
	binary.LittleEndian.PutUint16(core[0x1FE:], 0x820)
	return core
}

func TestPatchCore(t *testing.T) {
	tests := []struct {
		name  string
		size  int
		start uint64
		stale bool // a second, stale blocklist entry to clear
	}{
		{"53 sectors at 2048", 26936, 2048, false},
		{"whole sectors at 133120", 75 * 512, 133120, false},
		{"stale second entry", 10*512 + 1, 67584, true},
		{"largest", 888 * 512, 34, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := syntheticCore(tt.size)
			if tt.stale {
				clear(in[0x1D0:0x1E8])
				binary.LittleEndian.PutUint64(in[0x1E8:], 99)
				binary.LittleEndian.PutUint16(in[0x1F0:], 5)
			}
			out, err := patchCore(in, tt.start)
			if err != nil {
				t.Fatal(err)
			}
			n := (tt.size + 511) / 512
			if len(out) != n*512 {
				t.Fatalf("len = %d, want %d", len(out), n*512)
			}
			if got := binary.LittleEndian.Uint64(out[0x1F4:]); got != tt.start+1 {
				t.Errorf("blocklist start = %d, want %d", got, tt.start+1)
			}
			if got := binary.LittleEndian.Uint16(out[0x1FC:]); got != uint16(n-1) {
				t.Errorf("blocklist len = %d, want %d", got, n-1)
			}
			if got := binary.LittleEndian.Uint16(out[0x1FE:]); got != 0x820 {
				t.Errorf("blocklist segment = %#x, want 0x820", got)
			}
			if !bytes.Equal(out[0x1E8:0x1F4], make([]byte, 12)) {
				t.Errorf("terminator not zero: % x", out[0x1E8:0x1F4])
			}
			// Everything else is unchanged, and the padding is zero.
			if !bytes.Equal(out[:0x1E8], in[:0x1E8]) || !bytes.Equal(out[0x200:tt.size], in[0x200:]) {
				t.Error("bytes outside the blocklist changed")
			}
			if !bytes.Equal(out[tt.size:], make([]byte, len(out)-tt.size)) {
				t.Error("padding not zero")
			}
		})
	}
}

func TestPatchCoreErrors(t *testing.T) {
	noTerm := syntheticCore(4 * 512)
	for off := 0x1F4; off > 0; off -= 12 {
		binary.LittleEndian.PutUint16(noTerm[off+8:], 1)
	}
	tests := []struct {
		name string
		core []byte
	}{
		{"too small", make([]byte, 511)},
		{"too big", syntheticCore(889 * 512)},
		{"no terminator", noTerm},
	}
	for _, tt := range tests {
		if _, err := patchCore(tt.core, 2048); err == nil {
			t.Errorf("%s: want error", tt.name)
		}
	}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)*13 + seed
	}
	return b
}

func TestComposeMBR(t *testing.T) {
	boot := pattern(512, 1)
	boot[0x1FE], boot[0x1FF] = 0x55, 0xAA
	old := pattern(512, 77)
	mbr, err := composeMBR(old, boot, 2048)
	if err != nil {
		t.Fatal(err)
	}
	regions := []struct {
		from, to int
		src      []byte
		name     string
	}{
		{0, 3, boot, "jump"},
		{3, 0x5A, old, "BPB"},
		{0x5A, 0x5C, boot, "kernel address"},
		{0x65, 0x66, boot, "cli"},
		{0x68, 0x1B8, boot, "code"},
		{0x1B8, 0x1FE, old, "disk signature and partition table"},
		{0x1FE, 0x200, boot, "signature"},
	}
	for _, r := range regions {
		if !bytes.Equal(mbr[r.from:r.to], r.src[r.from:r.to]) {
			t.Errorf("%s (%#x..%#x) not from the expected source", r.name, r.from, r.to)
		}
	}
	if got := binary.LittleEndian.Uint64(mbr[0x5C:]); got != 2048 {
		t.Errorf("kernel sector = %d", got)
	}
	if mbr[0x64] != 0xFF || mbr[0x66] != 0x90 || mbr[0x67] != 0x90 {
		t.Errorf("boot drive/drive check = % x % x", mbr[0x64], mbr[0x66:0x68])
	}
	if _, err := composeMBR(old, boot[:511], 1); err == nil {
		t.Error("short boot.img: want error")
	}
	if _, err := composeMBR(old[:100], boot, 1); err == nil {
		t.Error("short sector 0: want error")
	}
}

// TestInstallBIOSFile runs InstallBIOS on a disk image file and checks
// that exactly sector 0 and the core's sectors changed.
func TestInstallBIOSFile(t *testing.T) {
	const diskSectors = 8192
	const start, length = 2048, 2048
	disk := filepath.Join(t.TempDir(), "disk.img")
	orig := bytes.Repeat([]byte{0xCC}, diskSectors*512)
	copy(orig, pattern(512, 5))
	if err := os.WriteFile(disk, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	boot := pattern(512, 9)
	core := syntheticCore(20*512 + 17)
	if err := InstallBIOS(disk, boot, core, start, length); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	wantMBR, _ := composeMBR(orig[:512], boot, start)
	wantCore, _ := patchCore(core, start)
	if !bytes.Equal(got[:512], wantMBR) {
		t.Error("sector 0 differs from composeMBR")
	}
	end := start*512 + len(wantCore)
	if !bytes.Equal(got[start*512:end], wantCore) {
		t.Error("core sectors differ from patchCore")
	}
	if !bytes.Equal(got[512:start*512], orig[512:start*512]) || !bytes.Equal(got[end:], orig[end:]) {
		t.Error("bytes outside sector 0 and the core changed")
	}

	tests := []struct {
		name          string
		boot, core    []byte
		start, length uint64
		kind          errs.Kind
	}{
		{"partition too small", boot, core, start, 20, errs.Target},
		{"past the end", boot, core, diskSectors - 10, 2048, errs.Target},
		{"start in MBR", boot, core, 1, 2048, errs.Internal},
		{"bad boot.img", boot[:500], core, start, length, errs.Internal},
	}
	for _, tt := range tests {
		err := InstallBIOS(disk, tt.boot, tt.core, tt.start, tt.length)
		if err == nil {
			t.Errorf("%s: want error", tt.name)
			continue
		}
		if k := errs.KindOf(err); k != tt.kind {
			t.Errorf("%s: kind %v, want %v (%v)", tt.name, k, tt.kind, err)
		}
	}
	// A failed call must not have written anything.
	again, _ := os.ReadFile(disk)
	if !bytes.Equal(again, got) {
		t.Error("a failing InstallBIOS changed the disk")
	}
}

func TestFindBIOSBoot(t *testing.T) {
	mk := func(withBIOS bool) []byte {
		d := make([]byte, 34*512)
		h := d[512:]
		copy(h, "EFI PART")
		binary.LittleEndian.PutUint64(h[72:], 2)
		binary.LittleEndian.PutUint32(h[80:], 128)
		binary.LittleEndian.PutUint32(h[84:], 128)
		esp := []byte{0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B}
		e := d[2*512:]
		copy(e, esp)
		binary.LittleEndian.PutUint64(e[32:], 2048)
		binary.LittleEndian.PutUint64(e[40:], 67583)
		if withBIOS {
			e = d[2*512+128:]
			copy(e, biosBootType)
			binary.LittleEndian.PutUint64(e[32:], 67584)
			binary.LittleEndian.PutUint64(e[40:], 69631)
		}
		return d
	}
	s, n, err := findBIOSBoot(bytes.NewReader(mk(true)))
	if err != nil || s != 67584 || n != 2048 {
		t.Errorf("got %d, %d, %v; want 67584, 2048", s, n, err)
	}
	if _, _, err := findBIOSBoot(bytes.NewReader(mk(false))); err == nil {
		t.Error("no BIOS boot partition: want error")
	}
	if _, _, err := findBIOSBoot(bytes.NewReader(make([]byte, 34*512))); err == nil {
		t.Error("no GPT: want error")
	}
	var pe *os.PathError
	if _, _, err := FindBIOSBoot("/nonexistent"); !errors.As(err, &pe) {
		t.Errorf("missing device: %v", err)
	}
}
