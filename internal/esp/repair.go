package esp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

// go-diskfs 1.9.4 leaves three things that fsck.vfat reports: the FSInfo
// free-cluster count stays "unknown", the ".." entry of a directory whose
// parent is the root sometimes names the root's cluster instead of 0, and
// an occasional cluster is allocated without being referenced. Firmware
// tolerates all three, but a volume that does not pass fsck is not one we
// want to ship, so every write ends with this small consistency pass.

// fatVolume is the geometry of a FAT12/16/32 volume read from its BPB.
type fatVolume struct {
	f           *os.File
	offset      int64
	bps         int64 // bytes per sector
	spc         int64 // sectors per cluster
	fatStart    int64 // byte offset of the first FAT within the volume
	fatBytes    int64
	numFATs     int64
	rootDirOff  int64 // FAT16: byte offset of the fixed root directory
	rootDirLen  int64
	dataStart   int64
	clusters    uint32 // number of data clusters
	fat32       bool
	rootCluster uint32
	fsInfo      int64 // sector of FSInfo (FAT32)
	backupBoot  int64 // sector of the backup boot sector (FAT32)
	fat         []byte
}

func readVolume(f *os.File, offset int64) (*fatVolume, error) {
	bs := make([]byte, 512)
	if _, err := f.ReadAt(bs, offset); err != nil {
		return nil, fmt.Errorf("reading boot sector: %w", err)
	}
	v := &fatVolume{f: f, offset: offset}
	if err := v.geometry(bs); err != nil {
		return nil, err
	}
	if !v.fat32 && v.clusters < 4085 {
		return nil, errors.New("FAT12 is not supported")
	}
	if int64(v.clusters+2)*v.entrySize() > v.fatBytes {
		return nil, errors.New("FAT is too small for the data area")
	}
	v.fat = make([]byte, v.fatBytes)
	if _, err := f.ReadAt(v.fat, offset+v.fatStart); err != nil {
		return nil, fmt.Errorf("reading FAT: %w", err)
	}
	return v, nil
}

// geometry sets v's layout from the boot sector bs.
func (v *fatVolume) geometry(bs []byte) error {
	v.bps = int64(binary.LittleEndian.Uint16(bs[11:]))
	v.spc = int64(bs[13])
	reserved := int64(binary.LittleEndian.Uint16(bs[14:]))
	v.numFATs = int64(bs[16])
	rootEnts := int64(binary.LittleEndian.Uint16(bs[17:]))
	total := int64(binary.LittleEndian.Uint16(bs[19:]))
	if total == 0 {
		total = int64(binary.LittleEndian.Uint32(bs[32:]))
	}
	fatSectors := int64(binary.LittleEndian.Uint16(bs[22:]))
	if fatSectors == 0 {
		fatSectors = int64(binary.LittleEndian.Uint32(bs[36:]))
		v.fat32 = true
		v.rootCluster = binary.LittleEndian.Uint32(bs[44:])
		v.fsInfo = int64(binary.LittleEndian.Uint16(bs[48:]))
		v.backupBoot = int64(binary.LittleEndian.Uint16(bs[50:]))
	}
	if v.bps == 0 || v.spc == 0 || v.numFATs == 0 || fatSectors == 0 {
		return errors.New("invalid BPB")
	}
	v.fatStart = reserved * v.bps
	v.fatBytes = fatSectors * v.bps
	v.rootDirOff = v.fatStart + v.numFATs*v.fatBytes
	v.rootDirLen = rootEnts * 32
	v.dataStart = v.rootDirOff + (v.rootDirLen+v.bps-1)/v.bps*v.bps
	dataSectors := total - v.dataStart/v.bps
	if dataSectors <= 0 {
		return errors.New("BPB leaves no data area")
	}
	v.clusters = uint32(dataSectors / v.spc)
	return nil
}

// entrySize is the bytes per FAT entry.
func (v *fatVolume) entrySize() int64 {
	if v.fat32 {
		return 4
	}
	return 2
}

func (v *fatVolume) entry(c uint32) uint32 {
	if v.fat32 {
		return binary.LittleEndian.Uint32(v.fat[4*c:]) & 0x0fffffff
	}
	return uint32(binary.LittleEndian.Uint16(v.fat[2*c:]))
}

func (v *fatVolume) setEntry(c, val uint32) {
	if v.fat32 {
		old := binary.LittleEndian.Uint32(v.fat[4*c:])
		binary.LittleEndian.PutUint32(v.fat[4*c:], old&0xf0000000|val&0x0fffffff)
		return
	}
	binary.LittleEndian.PutUint16(v.fat[2*c:], uint16(val))
}

func (v *fatVolume) isEOC(val uint32) bool {
	if v.fat32 {
		return val >= 0x0ffffff8
	}
	return val >= 0xfff8
}

func (v *fatVolume) validCluster(c uint32) bool { return c >= 2 && c < v.clusters+2 }

// chain returns the clusters of the chain starting at c, marking them in used.
func (v *fatVolume) chain(c uint32, used []bool) ([]uint32, error) {
	var out []uint32
	for v.validCluster(c) {
		if used[c] {
			return nil, fmt.Errorf("cluster %d is linked twice", c)
		}
		used[c] = true
		out = append(out, c)
		next := v.entry(c)
		if v.isEOC(next) {
			break
		}
		c = next
	}
	return out, nil
}

func (v *fatVolume) clusterOff(c uint32) int64 {
	return v.offset + v.dataStart + int64(c-2)*v.spc*v.bps
}

// walk visits the directory stored in the given regions (byte offsets and
// lengths), fixing "." and ".." of its subdirectories.
func (v *fatVolume) walk(regions [][2]int64, self uint32, used []bool, depth int) error {
	if depth > 64 {
		return errors.New("directory tree too deep")
	}
	for _, r := range regions {
		buf := make([]byte, r[1])
		if _, err := v.f.ReadAt(buf, r[0]); err != nil {
			return fmt.Errorf("reading directory: %w", err)
		}
		for i := 0; i+32 <= len(buf); i += 32 {
			e := buf[i : i+32]
			if e[0] == 0 {
				return nil
			}
			attr := e[11]
			if e[0] == 0xe5 || attr&0x0f == 0x0f || attr&0x08 != 0 || e[0] == '.' {
				continue
			}
			first := uint32(binary.LittleEndian.Uint16(e[26:]))
			if v.fat32 {
				first |= uint32(binary.LittleEndian.Uint16(e[20:])) << 16
			}
			clusters, err := v.chain(first, used)
			if err != nil {
				return err
			}
			if attr&0x10 == 0 || len(clusters) == 0 {
				continue
			}
			if err := v.fixDots(clusters[0], self); err != nil {
				return err
			}
			sub := make([][2]int64, len(clusters))
			for j, c := range clusters {
				sub[j] = [2]int64{v.clusterOff(c), v.spc * v.bps}
			}
			if err := v.walk(sub, clusters[0], used, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// fixDots makes "." point at dir and ".." at parent (0 for the root).
func (v *fatVolume) fixDots(dir, parent uint32) error {
	off := v.clusterOff(dir)
	buf := make([]byte, 64)
	if _, err := v.f.ReadAt(buf, off); err != nil {
		return err
	}
	if string(buf[0:11]) != ".          " || string(buf[32:43]) != "..         " {
		return fmt.Errorf("directory at cluster %d lacks . and .. entries", dir)
	}
	orig := string(buf)
	put := func(e []byte, c uint32) {
		binary.LittleEndian.PutUint16(e[26:], uint16(c))
		if v.fat32 {
			binary.LittleEndian.PutUint16(e[20:], uint16(c>>16))
		}
	}
	put(buf[0:32], dir)
	put(buf[32:64], parent)
	if string(buf) == orig {
		return nil
	}
	_, err := v.f.WriteAt(buf, off)
	return err
}

// repair runs the consistency pass described at the top of this file.
func repair(f *os.File, offset int64) error {
	v, err := readVolume(f, offset)
	if err != nil {
		return err
	}
	used := make([]bool, v.clusters+2)
	var root [][2]int64
	if v.fat32 {
		clusters, err := v.chain(v.rootCluster, used)
		if err != nil {
			return err
		}
		for _, c := range clusters {
			root = append(root, [2]int64{v.clusterOff(c), v.spc * v.bps})
		}
	} else {
		root = [][2]int64{{offset + v.rootDirOff, v.rootDirLen}}
	}
	// Subdirectories of the root record their parent as cluster 0.
	if err := v.walk(root, 0, used, 0); err != nil {
		return fmt.Errorf("checking directories: %w", err)
	}

	changed := false
	free := uint32(0)
	nextFree := uint32(0xffffffff)
	for c := uint32(2); c < v.clusters+2; c++ {
		val := v.entry(c)
		if !used[c] && val != 0 && val != v.badMarker() {
			v.setEntry(c, 0)
			val = 0
			changed = true
		}
		if val == 0 {
			free++
			if nextFree == 0xffffffff {
				nextFree = c
			}
		}
	}
	if changed {
		for i := int64(0); i < v.numFATs; i++ {
			if _, err := f.WriteAt(v.fat, offset+v.fatStart+i*v.fatBytes); err != nil {
				return fmt.Errorf("writing FAT: %w", err)
			}
		}
	}
	if v.fat32 {
		var info [8]byte
		binary.LittleEndian.PutUint32(info[0:], free)
		binary.LittleEndian.PutUint32(info[4:], nextFree)
		for _, sec := range []int64{v.fsInfo, v.backupBoot + v.fsInfo} {
			if sec == 0 || sec == 0xffff || !v.hasFSInfo(sec) {
				continue
			}
			if _, err := f.WriteAt(info[:], offset+sec*v.bps+488); err != nil {
				return fmt.Errorf("writing FSInfo: %w", err)
			}
		}
	}
	return nil
}

func (v *fatVolume) badMarker() uint32 {
	if v.fat32 {
		return 0x0ffffff7
	}
	return 0xfff7
}

// hasFSInfo reports whether sector sec carries the FSInfo signatures.
func (v *fatVolume) hasFSInfo(sec int64) bool {
	b := make([]byte, 512)
	if _, err := v.f.ReadAt(b, v.offset+sec*v.bps); err != nil {
		return false
	}
	return string(b[0:4]) == "RRaA" && string(b[484:488]) == "rrAa"
}

// fitFAT lowers the BPB's sector count when the FAT go-diskfs sized cannot
// address every cluster of the data area (it happens at some sizes, such
// as exactly 64 or 505 MiB): the volume loses the last few clusters
// instead of being unusable. Both boot sectors are updated.
func fitFAT(f *os.File, offset int64) error {
	bs := make([]byte, 512)
	if _, err := f.ReadAt(bs, offset); err != nil {
		return fmt.Errorf("reading boot sector: %w", err)
	}
	var v fatVolume
	if err := v.geometry(bs); err != nil {
		return err
	}
	maxClusters := v.fatBytes/v.entrySize() - 2
	if int64(v.clusters) <= maxClusters {
		return nil
	}
	if (v.fat32 && maxClusters < 65525) || (!v.fat32 && maxClusters < 4085) {
		return fmt.Errorf("FAT of %d bytes cannot address enough clusters", v.fatBytes)
	}
	newTotal := v.dataStart/v.bps + maxClusters*v.spc
	if binary.LittleEndian.Uint16(bs[19:]) != 0 {
		binary.LittleEndian.PutUint16(bs[19:], uint16(newTotal))
	} else {
		binary.LittleEndian.PutUint32(bs[32:], uint32(newTotal))
	}
	sectors := []int64{0}
	if v.fat32 {
		sectors = append(sectors, v.backupBoot)
	}
	for _, sector := range sectors {
		if _, err := f.WriteAt(bs, offset+sector*v.bps); err != nil {
			return fmt.Errorf("writing boot sector: %w", err)
		}
	}
	return nil
}
