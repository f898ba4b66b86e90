// Package blockdev prepares target disks without external tools: loop
// devices, a GPT writer, BLKPG partition nodes (the installer's kernel may
// have no GPT parser), device inspection and safety checks, and wiping.
//
// Order of writes on a disk: Wipe (if asked), WriteGPT, AddPartitions,
// filesystems, and only at the end the bootloader, which puts its boot code
// into MBR bytes 0-439 and the BIOS-BOOT partition. WriteGPT writes a
// protective MBR with empty boot code, so running it after the bootloader
// would erase the BIOS boot code.
package blockdev

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"strings"
	"unicode/utf16"

	"golang.org/x/sys/unix"
)

// GUID is a GPT GUID in the byte order of its textual form (RFC 4122); the
// on-disk encoding swaps the first three fields to little endian.
type GUID [16]byte

// ParseGUID parses "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (any case).
func ParseGUID(s string) (GUID, error) {
	var g GUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, fmt.Errorf("invalid GUID %q", s)
	}
	h := strings.ReplaceAll(s, "-", "")
	if _, err := hex.Decode(g[:], []byte(h)); err != nil {
		return g, fmt.Errorf("invalid GUID %q: %w", s, err)
	}
	return g, nil
}

// mustGUID parses a GUID constant known at compile time.
func mustGUID(s string) GUID {
	g, err := ParseGUID(s)
	if err != nil {
		panic(err) // only reached with a bad literal in this package
	}
	return g
}

// String returns the upper-case textual form, as sfdisk prints it.
func (g GUID) String() string {
	h := strings.ToUpper(hex.EncodeToString(g[:]))
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// IsZero reports whether g is the all-zero (unused) GUID.
func (g GUID) IsZero() bool { return g == GUID{} }

// NewGUID returns a random (version 4) GUID.
func NewGUID() (GUID, error) {
	var g GUID
	if _, err := rand.Read(g[:]); err != nil {
		return g, fmt.Errorf("generating GUID: %w", err)
	}
	g[6] = g[6]&0x0f | 0x40
	g[8] = g[8]&0x3f | 0x80
	return g, nil
}

// NewUUID returns a random version 4 UUID in lower-case textual form, for
// filesystem UUIDs passed to mkfs.
func NewUUID() string {
	g, err := NewGUID()
	if err != nil {
		// crypto/rand does not fail on Linux ≥ 3.17; keep a valid result anyway.
		return "00000000-0000-4000-8000-000000000000"
	}
	return strings.ToLower(g.String())
}

func (g GUID) disk() []byte {
	b := make([]byte, 16)
	b[0], b[1], b[2], b[3] = g[3], g[2], g[1], g[0]
	b[4], b[5] = g[5], g[4]
	b[6], b[7] = g[7], g[6]
	copy(b[8:], g[8:])
	return b
}

func guidFromDisk(b []byte) GUID {
	var g GUID
	g[0], g[1], g[2], g[3] = b[3], b[2], b[1], b[0]
	g[4], g[5] = b[5], b[4]
	g[6], g[7] = b[7], b[6]
	copy(g[8:], b[8:16])
	return g
}

// Well-known partition type GUIDs.
var (
	TypeBIOSBoot   = mustGUID("21686148-6449-6E6F-744E-656564454649")
	TypeESP        = mustGUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
	TypeLinuxData  = mustGUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")
	TypeRootX86_64 = mustGUID("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709")
	TypeXBOOTLDR   = mustGUID("BC13C2FF-59E6-4262-A352-B275FD6F7172")
)

// AttrLegacyBIOSBootable is GPT attribute bit 2, what sfdisk's "bootable"
// sets; bootc marks BIOS-BOOT with it.
const AttrLegacyBIOSBootable uint64 = 1 << 2

// Partition is one GPT entry. Start and Size are in bytes and must be
// multiples of the logical sector size.
type Partition struct {
	Number     int // 1-based slot in the entry array
	Name       string
	Type       GUID
	UUID       GUID // zero: WriteGPT picks a random one
	Start      uint64
	Size       uint64
	Attributes uint64
}

// End returns the first byte after the partition.
func (p Partition) End() uint64 { return p.Start + p.Size }

// Layout is a GPT as read back from a disk.
type Layout struct {
	DiskGUID   GUID
	SectorSize uint32
	// FirstUsable and LastUsable bound the partitions, in bytes: the range
	// is [FirstUsable, LastUsable).
	FirstUsable, LastUsable uint64
	Partitions              []Partition
}

const (
	gptEntries    = 128
	gptEntrySize  = 128
	gptHeaderSize = 92
	gptArrayBytes = gptEntries * gptEntrySize
)

// gptGeometry returns the LBAs that frame a GPT on a disk of the given size.
type gptGeometry struct {
	ss                      uint64 // sector size
	lastLBA                 uint64
	arraySectors            uint64
	firstUsable, lastUsable uint64 // LBAs, inclusive
}

func newGeometry(size uint64, ss uint32) (gptGeometry, error) {
	g := gptGeometry{ss: uint64(ss)}
	if ss < 512 || ss&(ss-1) != 0 {
		return g, fmt.Errorf("unsupported sector size %d", ss)
	}
	g.arraySectors = (gptArrayBytes + g.ss - 1) / g.ss
	sectors := size / g.ss
	if sectors < 2*(2+g.arraySectors)+1 {
		return g, fmt.Errorf("disk of %d bytes is too small for a GPT", size)
	}
	g.lastLBA = sectors - 1
	g.firstUsable = 2 + g.arraySectors
	g.lastUsable = g.lastLBA - 1 - g.arraySectors
	return g, nil
}

// UsableRange returns the byte range [first, last) that partitions may use
// on a disk of size bytes with the given logical sector size.
func UsableRange(size uint64, sectorSize uint32) (first, last uint64, err error) {
	g, err := newGeometry(size, sectorSize)
	if err != nil {
		return 0, 0, err
	}
	return g.firstUsable * g.ss, (g.lastUsable + 1) * g.ss, nil
}

// WriteGPT writes a protective MBR and the primary and backup GPT to dev (a
// block device or a regular file) and syncs it. Partitions with a zero UUID
// get a random one, written back into parts; a zero diskGUID is replaced
// with a random one. It does not create partition nodes: see AddPartitions.
func WriteGPT(dev string, parts []Partition, diskGUID GUID) error {
	f, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("writing GPT: %w", err)
	}
	defer f.Close()
	size, ss, err := geometryOf(f)
	if err != nil {
		return fmt.Errorf("writing GPT on %s: %w", dev, err)
	}
	if err := writeGPT(f, size, ss, parts, diskGUID); err != nil {
		return fmt.Errorf("writing GPT on %s: %w", dev, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing GPT on %s: sync: %w", dev, err)
	}
	return f.Close()
}

func writeGPT(f *os.File, size uint64, ss uint32, parts []Partition, diskGUID GUID) error {
	g, err := newGeometry(size, ss)
	if err != nil {
		return err
	}
	if err := validate(parts, g); err != nil {
		return err
	}
	if diskGUID.IsZero() {
		if diskGUID, err = NewGUID(); err != nil {
			return err
		}
	}
	array := make([]byte, g.arraySectors*g.ss)
	for i := range parts {
		p := &parts[i]
		if p.UUID.IsZero() {
			if p.UUID, err = NewGUID(); err != nil {
				return err
			}
		}
		e := array[(p.Number-1)*gptEntrySize:]
		copy(e[0:16], p.Type.disk())
		copy(e[16:32], p.UUID.disk())
		binary.LittleEndian.PutUint64(e[32:], p.Start/g.ss)
		binary.LittleEndian.PutUint64(e[40:], p.End()/g.ss-1)
		binary.LittleEndian.PutUint64(e[48:], p.Attributes)
		for j, u := range utf16.Encode([]rune(p.Name)) {
			binary.LittleEndian.PutUint16(e[56+2*j:], u)
		}
	}
	arrayCRC := crc32.ChecksumIEEE(array[:gptArrayBytes])

	header := func(self, alt, arrayLBA uint64) []byte {
		h := make([]byte, g.ss)
		copy(h[0:8], "EFI PART")
		binary.LittleEndian.PutUint32(h[8:], 0x00010000)
		binary.LittleEndian.PutUint32(h[12:], gptHeaderSize)
		binary.LittleEndian.PutUint64(h[24:], self)
		binary.LittleEndian.PutUint64(h[32:], alt)
		binary.LittleEndian.PutUint64(h[40:], g.firstUsable)
		binary.LittleEndian.PutUint64(h[48:], g.lastUsable)
		copy(h[56:72], diskGUID.disk())
		binary.LittleEndian.PutUint64(h[72:], arrayLBA)
		binary.LittleEndian.PutUint32(h[80:], gptEntries)
		binary.LittleEndian.PutUint32(h[84:], gptEntrySize)
		binary.LittleEndian.PutUint32(h[88:], arrayCRC)
		binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:gptHeaderSize]))
		return h
	}

	// Protective MBR: one 0xEE entry covering the disk (capped at 2^32-1
	// sectors); boot code and disk signature stay zero until the bootloader
	// step writes them.
	mbr := make([]byte, g.ss)
	pe := mbr[446:462]
	pe[1], pe[2], pe[3] = 0x00, 0x02, 0x00 // CHS of LBA 1
	pe[4] = 0xee
	pe[5], pe[6], pe[7] = 0xff, 0xff, 0xff
	binary.LittleEndian.PutUint32(pe[8:], 1)
	binary.LittleEndian.PutUint32(pe[12:], uint32(min(g.lastLBA, 0xffffffff)))
	mbr[510], mbr[511] = 0x55, 0xaa

	backupArray := g.lastLBA - g.arraySectors
	writes := []struct {
		lba  uint64
		data []byte
	}{
		// Backup first: a crash in between leaves no valid primary GPT.
		{backupArray, array},
		{g.lastLBA, header(g.lastLBA, 1, backupArray)},
		{2, array},
		{1, header(1, g.lastLBA, 2)},
		{0, mbr},
	}
	for _, w := range writes {
		if _, err := f.WriteAt(w.data, int64(w.lba*g.ss)); err != nil {
			return fmt.Errorf("writing LBA %d: %w", w.lba, err)
		}
	}
	return nil
}

func validate(parts []Partition, g gptGeometry) error {
	seen := map[int]bool{}
	for i, p := range parts {
		what := fmt.Sprintf("partition %d (%s)", p.Number, p.Name)
		switch {
		case p.Number < 1 || p.Number > gptEntries:
			return fmt.Errorf("%s: number must be 1..%d", what, gptEntries)
		case seen[p.Number]:
			return fmt.Errorf("%s: number used twice", what)
		case p.Type.IsZero():
			return fmt.Errorf("%s: no type GUID", what)
		case p.Size == 0:
			return fmt.Errorf("%s: size is zero", what)
		case p.Start%g.ss != 0 || p.Size%g.ss != 0:
			return fmt.Errorf("%s: start %d or size %d is not a multiple of the %d-byte sector", what, p.Start, p.Size, g.ss)
		case p.Start < g.firstUsable*g.ss || p.End() > (g.lastUsable+1)*g.ss || p.End() < p.Start:
			return fmt.Errorf("%s: bytes %d..%d are outside the usable area %d..%d", what, p.Start, p.End(), g.firstUsable*g.ss, (g.lastUsable+1)*g.ss)
		case len(utf16.Encode([]rune(p.Name))) > 36:
			return fmt.Errorf("%s: name longer than 36 UTF-16 units", what)
		}
		seen[p.Number] = true
		for _, q := range parts[:i] {
			if p.Start < q.End() && q.Start < p.End() {
				return fmt.Errorf("%s overlaps partition %d (%s)", what, q.Number, q.Name)
			}
		}
	}
	return nil
}

// ReadGPT reads and checks the primary GPT of dev (block device or file).
func ReadGPT(dev string) (*Layout, error) {
	f, err := os.Open(dev)
	if err != nil {
		return nil, fmt.Errorf("reading GPT: %w", err)
	}
	defer f.Close()
	size, ss, err := geometryOf(f)
	if err != nil {
		return nil, fmt.Errorf("reading GPT on %s: %w", dev, err)
	}
	l, err := readGPT(f, size, ss)
	if err != nil {
		return nil, fmt.Errorf("reading GPT on %s: %w", dev, err)
	}
	return l, nil
}

var errNoGPT = errors.New("no GPT header")

func readGPT(f *os.File, size uint64, ss uint32) (*Layout, error) {
	g, err := newGeometry(size, ss)
	if err != nil {
		return nil, err
	}
	h := make([]byte, g.ss)
	if _, err := f.ReadAt(h, int64(g.ss)); err != nil {
		return nil, err
	}
	if string(h[0:8]) != "EFI PART" {
		return nil, errNoGPT
	}
	hs := binary.LittleEndian.Uint32(h[12:])
	if hs < gptHeaderSize || uint64(hs) > g.ss {
		return nil, fmt.Errorf("GPT header size %d is invalid", hs)
	}
	want := binary.LittleEndian.Uint32(h[16:])
	chk := bytes.Clone(h[:hs])
	binary.LittleEndian.PutUint32(chk[16:], 0)
	if crc32.ChecksumIEEE(chk) != want {
		return nil, errors.New("GPT header CRC mismatch")
	}
	n := binary.LittleEndian.Uint32(h[80:])
	es := binary.LittleEndian.Uint32(h[84:])
	if es < gptEntrySize || n == 0 || uint64(n)*uint64(es) > 1<<20 {
		return nil, fmt.Errorf("GPT entry array of %d x %d bytes is unsupported", n, es)
	}
	array := make([]byte, uint64(n)*uint64(es))
	if _, err := f.ReadAt(array, int64(binary.LittleEndian.Uint64(h[72:])*g.ss)); err != nil {
		return nil, err
	}
	if crc32.ChecksumIEEE(array) != binary.LittleEndian.Uint32(h[88:]) {
		return nil, errors.New("GPT entry array CRC mismatch")
	}
	l := &Layout{
		DiskGUID:    guidFromDisk(h[56:72]),
		SectorSize:  ss,
		FirstUsable: binary.LittleEndian.Uint64(h[40:]) * g.ss,
		LastUsable:  (binary.LittleEndian.Uint64(h[48:]) + 1) * g.ss,
	}
	for i := uint32(0); i < n; i++ {
		e := array[i*es : (i+1)*es]
		t := guidFromDisk(e[0:16])
		if t.IsZero() {
			continue
		}
		first := binary.LittleEndian.Uint64(e[32:])
		last := binary.LittleEndian.Uint64(e[40:])
		if last < first {
			return nil, fmt.Errorf("GPT entry %d ends before it starts", i+1)
		}
		name := make([]uint16, 0, 36)
		for j := 56; j+1 < 128; j += 2 {
			u := binary.LittleEndian.Uint16(e[j:])
			if u == 0 {
				break
			}
			name = append(name, u)
		}
		l.Partitions = append(l.Partitions, Partition{
			Number:     int(i + 1),
			Name:       string(utf16.Decode(name)),
			Type:       t,
			UUID:       guidFromDisk(e[16:32]),
			Start:      first * g.ss,
			Size:       (last - first + 1) * g.ss,
			Attributes: binary.LittleEndian.Uint64(e[48:]),
		})
	}
	return l, nil
}
