// Package esp writes the EFI System Partition without mounting it: the
// installer's kernel may lack vfat, so the FAT filesystem is created and
// filled from userspace with go-diskfs.
//
// Volumes of at least MinFAT32Size bytes get FAT32 (what firmware and
// bootc's mkfs.fat produce for a 512 MiB ESP); smaller ones, used in tests
// and tiny images, get FAT16 because FAT32 with fewer than 65525 clusters is
// invalid and tools such as mtools refuse it.
package esp

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/filesystem/fat16"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"golang.org/x/sys/unix"
)

const (
	sectorSize = 512
	mib        = 1 << 20

	// MinFAT32Size is the smallest volume formatted as FAT32. go-diskfs uses
	// 512-byte clusters up to 260 MiB, so 36 MiB leaves more than the 65525
	// clusters FAT32 requires after the reserved sectors and both FATs.
	MinFAT32Size = 36 * mib
	// MinSize is the smallest volume Format accepts (FAT16 needs 4085 clusters).
	MinSize = 8 * mib
	// MaxSize is the largest volume Format accepts (FAT32 with 32 KiB clusters).
	MaxSize = 2 << 40

	// DefaultLabel is the FAT label bootc gives the ESP.
	DefaultLabel = "EFI-SYSTEM"
)

// File is one file to place on the ESP. Path uses forward slashes and is
// relative to the volume root, e.g. "EFI/BOOT/BOOTX64.EFI".
type File struct {
	Path string
	Data []byte
}

// Format creates a FAT filesystem over the first size bytes of dev (a
// partition device or a regular file); size 0 means the whole of dev. It
// returns the volume ID formatted as XXXX-XXXX, which is what blkid reports
// as UUID and what fstab's UUID= matches.
func Format(dev string, size uint64, label string) (string, error) {
	return FormatAt(dev, 0, size, label)
}

// FormatAt is Format for the region [offset, offset+size) of path, for disk
// image files that are not attached to a loop device. offset must be a
// multiple of 512.
func FormatAt(dev string, offset, size uint64, label string) (string, error) {
	// go-diskfs derives the volume ID from the clock (or zero when
	// reproducible); a random one avoids collisions between installs.
	var id [4]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", fmt.Errorf("formatting ESP on %s: volume ID: %w", dev, err)
	}
	return formatAt(dev, offset, size, label, id, nil)
}

// Clear empties the FAT filesystem on dev (a partition device or a file
// holding just the volume) by formatting it again over the same size with
// the same label and volume ID, so that fstab entries naming it by UUID or
// LABEL stay valid. It is how an install next to an existing system removes
// the old boot loaders without mounting the ESP.
func Clear(dev string) error {
	f, err := os.Open(dev)
	if err != nil {
		return fmt.Errorf("clearing ESP: %w", err)
	}
	bs := make([]byte, sectorSize)
	_, err = f.ReadAt(bs, 0)
	f.Close()
	if err != nil {
		return fmt.Errorf("clearing ESP %s: reading boot sector: %w", dev, err)
	}
	if bs[510] != 0x55 || bs[511] != 0xaa {
		return fmt.Errorf("clearing ESP %s: no FAT boot sector", dev)
	}
	if bps := binary.LittleEndian.Uint16(bs[11:13]); bps != sectorSize {
		return fmt.Errorf("clearing ESP %s: %d-byte sectors are not supported", dev, bps)
	}
	total := uint64(binary.LittleEndian.Uint16(bs[19:21]))
	if total == 0 {
		total = uint64(binary.LittleEndian.Uint32(bs[32:36]))
	}
	// The extended BPB (volume ID, then label) sits at 0x43 on FAT32 and at
	// 0x27 on FAT12/16.
	ext, fat32 := 0x27, string(bs[82:90]) == "FAT32   "
	if fat32 {
		ext = 0x43
	}
	var id [4]byte
	copy(id[:], bs[ext:ext+4])
	label := strings.TrimRight(string(bs[ext+4:ext+15]), " ")
	if label == "NO NAME" || checkLabel(label) != nil {
		label = DefaultLabel
	}
	// The same FAT type too: go-diskfs cannot make FAT32 of every size.
	if _, err := formatAt(dev, 0, total*sectorSize, label, id, &fat32); err != nil {
		return fmt.Errorf("clearing ESP: %w", err)
	}
	return nil
}

// formatAt formats with the given volume ID; useFAT32 nil chooses by size.
func formatAt(dev string, offset, size uint64, label string, id [4]byte, useFAT32 *bool) (string, error) {
	if label == "" {
		label = DefaultLabel
	}
	if err := checkLabel(label); err != nil {
		return "", fmt.Errorf("formatting ESP on %s: %w", dev, err)
	}
	if offset%sectorSize != 0 {
		return "", fmt.Errorf("formatting ESP on %s: offset %d is not a multiple of %d", dev, offset, sectorSize)
	}
	f, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("formatting ESP: %w", err)
	}
	defer f.Close()
	devSize, err := sizeOf(f)
	if err != nil {
		return "", fmt.Errorf("formatting ESP on %s: %w", dev, err)
	}
	if size == 0 {
		if offset >= devSize {
			return "", fmt.Errorf("formatting ESP on %s: offset %d is beyond the end (%d bytes)", dev, offset, devSize)
		}
		size = devSize - offset
	}
	size -= size % sectorSize
	if offset+size > devSize {
		return "", fmt.Errorf("formatting ESP on %s: region %d+%d exceeds its size %d", dev, offset, size, devSize)
	}
	if size < MinSize || size > MaxSize {
		return "", fmt.Errorf("formatting ESP on %s: size %d is outside the supported range %d..%d bytes", dev, size, uint64(MinSize), uint64(MaxSize))
	}

	// Stale directory clusters of an earlier filesystem would be read as
	// entries of the new one, so clear the reserved area, both FATs and the
	// start of the data area first.
	if err := zeroRange(f, offset, min(size, metadataSpan(size))); err != nil {
		return "", fmt.Errorf("formatting ESP on %s: %w", dev, err)
	}

	b := file.New(f, false)
	var idOffset int64
	var backupIDOffset int64 = -1
	if useFAT32 == nil {
		big := size >= MinFAT32Size
		useFAT32 = &big
	}
	if *useFAT32 {
		if _, err := fat32.Create(b, int64(size), int64(offset), sectorSize, label, true); err != nil {
			return "", fmt.Errorf("formatting ESP on %s as FAT32: %w", dev, err)
		}
		// FAT32 boot sector: volume ID at 0x43; the backup boot sector is sector 6.
		idOffset = 0x43
		backupIDOffset = 6*sectorSize + 0x43
	} else {
		if _, err := fat16.Create(b, int64(size), int64(offset), sectorSize, label, true); err != nil {
			return "", fmt.Errorf("formatting ESP on %s as FAT16: %w", dev, err)
		}
		idOffset = 0x27
	}

	for _, o := range []int64{idOffset, backupIDOffset} {
		if o < 0 {
			continue
		}
		if _, err := f.WriteAt(id[:], int64(offset)+o); err != nil {
			return "", fmt.Errorf("formatting ESP on %s: writing volume ID: %w", dev, err)
		}
	}
	if err := fitFAT(f, int64(offset)); err != nil {
		return "", fmt.Errorf("formatting ESP on %s: %w", dev, err)
	}
	if err := repair(f, int64(offset)); err != nil {
		return "", fmt.Errorf("formatting ESP on %s: %w", dev, err)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("formatting ESP on %s: sync: %w", dev, err)
	}
	v := binary.LittleEndian.Uint32(id[:])
	return fmt.Sprintf("%04X-%04X", v>>16, v&0xffff), nil
}

// WriteFiles creates the files (and their parent directories) on the FAT
// filesystem on dev, replacing files that already exist.
func WriteFiles(dev string, files []File) error {
	return WriteFilesAt(dev, 0, files)
}

// WriteFilesAt is WriteFiles for a filesystem starting offset bytes into path.
func WriteFilesAt(dev string, offset uint64, files []File) error {
	// Sorted so that the on-disk order, and thus the image, is reproducible.
	sorted := make([]File, 0, len(files))
	for _, fl := range files {
		p, err := cleanPath(fl.Path)
		if err != nil {
			return fmt.Errorf("writing %q to ESP %s: %w", fl.Path, dev, err)
		}
		sorted = append(sorted, File{Path: p, Data: fl.Data})
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })

	// go-diskfs mixes up its cached directory entries when one handle
	// removes several files of a directory or removes and recreates one, so
	// each old file is removed through its own handle and the volume
	// repaired (which frees the clusters Remove leaves allocated) before a
	// fresh handle writes the new files.
	for _, fl := range sorted {
		if err := withVolume(dev, offset, func(fsys filesystem.FileSystem) error {
			// ReadDir and Stat follow io/fs naming (no leading slash, "."
			// for the root) while OpenFile and Remove take absolute paths.
			dir := strings.TrimPrefix(path.Dir(fl.Path), "/")
			if dir == "" {
				dir = "."
			}
			ents, err := fsys.ReadDir(dir)
			if err != nil {
				return nil // parent absent: nothing to remove
			}
			i := slices.IndexFunc(ents, func(e iofs.DirEntry) bool { return strings.EqualFold(e.Name(), path.Base(fl.Path)) })
			if i < 0 {
				return nil
			}
			if ents[i].IsDir() {
				return fmt.Errorf("writing %s: a directory is in the way", fl.Path)
			}
			if err := fsys.Remove(fl.Path); err != nil {
				return fmt.Errorf("removing old %s: %w", fl.Path, err)
			}
			return nil
		}); err != nil {
			return fmt.Errorf("writing ESP %s: %w", dev, err)
		}
	}
	if err := withVolume(dev, offset, func(fsys filesystem.FileSystem) error {
		for _, fl := range sorted {
			if err := writeOne(fsys, fl.Path, fl.Data); err != nil {
				return fmt.Errorf("writing %s: %w", fl.Path, err)
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("writing ESP %s: %w", dev, err)
	}
	return nil
}

// withVolume opens the filesystem read-write, runs fn, then repairs and
// syncs the volume.
func withVolume(dev string, offset uint64, fn func(filesystem.FileSystem) error) error {
	fsys, f, err := open(dev, offset, false)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := fn(fsys); err != nil {
		return err
	}
	if err := repair(f, int64(offset)); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	return f.Close()
}

// ReadFile returns the content of the file at name on the FAT filesystem on dev.
func ReadFile(dev, name string) ([]byte, error) {
	return ReadFileAt(dev, 0, name)
}

// ReadFileAt is ReadFile for a filesystem starting offset bytes into path.
func ReadFileAt(dev string, offset uint64, name string) ([]byte, error) {
	fsys, f, err := open(dev, offset, true)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := cleanPath(name)
	if err != nil {
		return nil, fmt.Errorf("reading %q from ESP %s: %w", name, dev, err)
	}
	fl, err := fsys.OpenFile(p, os.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("reading %s from ESP %s: %w", p, dev, err)
	}
	defer fl.Close()
	data, err := io.ReadAll(fl)
	if err != nil {
		return nil, fmt.Errorf("reading %s from ESP %s: %w", p, dev, err)
	}
	return data, nil
}

func writeOne(fsys filesystem.FileSystem, p string, data []byte) error {
	if dir := path.Dir(p); dir != "/" {
		// go-diskfs's Mkdir creates intermediate directories and succeeds
		// when the directory exists.
		if err := fsys.Mkdir(dir); err != nil {
			return fmt.Errorf("creating directory %s: %w", dir, err)
		}
	}
	fl, err := fsys.OpenFile(p, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return err
	}
	if _, err := io.Copy(fl, bytes.NewReader(data)); err != nil {
		fl.Close()
		return err
	}
	return fl.Close()
}

// open reads the FAT filesystem at offset in dev, choosing FAT32 or FAT16 by
// the boot sector's filesystem type field.
func open(dev string, offset uint64, readOnly bool) (filesystem.FileSystem, *os.File, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(dev, flag|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("opening ESP: %w", err)
	}
	devSize, err := sizeOf(f)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("opening ESP %s: %w", dev, err)
	}
	bs := make([]byte, sectorSize)
	if _, err := f.ReadAt(bs, int64(offset)); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("opening ESP %s: reading boot sector: %w", dev, err)
	}
	if bs[510] != 0x55 || bs[511] != 0xaa {
		f.Close()
		return nil, nil, fmt.Errorf("opening ESP %s: no FAT boot sector at offset %d", dev, offset)
	}
	// Size from the BPB so a filesystem inside a larger file is read correctly.
	total := uint64(binary.LittleEndian.Uint16(bs[19:21]))
	if total == 0 {
		total = uint64(binary.LittleEndian.Uint32(bs[32:36]))
	}
	size := total * uint64(binary.LittleEndian.Uint16(bs[11:13]))
	if size == 0 || offset+size > devSize {
		f.Close()
		return nil, nil, fmt.Errorf("opening ESP %s: boot sector gives %d bytes, device has %d after offset", dev, size, devSize-offset)
	}
	var b backend.Storage = file.New(f, readOnly)
	var fsys filesystem.FileSystem
	switch {
	case string(bs[82:90]) == "FAT32   ":
		fsys, err = fat32.Read(b, int64(size), int64(offset), 0)
	case string(bs[54:62]) == "FAT16   ":
		fsys, err = fat16.Read(b, int64(size), int64(offset), 0)
	default:
		err = errors.New("not a FAT32 or FAT16 filesystem")
	}
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("opening ESP %s: %w", dev, err)
	}
	return fsys, f, nil
}

// cleanPath turns a volume-relative path into the absolute form go-diskfs
// expects and rejects names that cannot be stored.
func cleanPath(p string) (string, error) {
	if strings.ContainsAny(p, "\\\x00") {
		return "", errors.New("backslash or NUL in path")
	}
	c := path.Clean("/" + p)
	if c == "/" {
		return "", errors.New("empty path")
	}
	for _, part := range strings.Split(c[1:], "/") {
		if len(part) > 255 {
			return "", fmt.Errorf("name %.20q... longer than 255 characters", part)
		}
	}
	return c, nil
}

func checkLabel(label string) error {
	if len(label) > 11 {
		return fmt.Errorf("FAT label %q is longer than 11 characters", label)
	}
	for _, r := range label {
		if r < 0x20 || r > 0x7e || strings.ContainsRune(`"*+,./:;<=>?[\]|`, r) {
			return fmt.Errorf("FAT label %q contains %q", label, r)
		}
	}
	return nil
}

// metadataSpan is an upper bound of the reserved sectors, both FATs and the
// first few clusters for a volume of size bytes.
func metadataSpan(size uint64) uint64 {
	// Worst case is 512-byte clusters with 4-byte FAT entries: each FAT is
	// size/128 bytes. Add 1 MiB for the reserved area and root directory.
	return 2*(size/128) + mib
}

func zeroRange(f *os.File, off, n uint64) error {
	buf := make([]byte, min(n, mib))
	for done := uint64(0); done < n; {
		k := min(uint64(len(buf)), n-done)
		if _, err := f.WriteAt(buf[:k], int64(off+done)); err != nil {
			return fmt.Errorf("zeroing metadata area: %w", err)
		}
		done += k
	}
	return nil
}

// sizeOf returns the size of a block device or regular file.
func sizeOf(f *os.File) (uint64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if st.Mode()&os.ModeDevice != 0 {
		var n uint64
		if err := ioctlUint64(int(f.Fd()), unix.BLKGETSIZE64, &n); err != nil {
			return 0, fmt.Errorf("BLKGETSIZE64: %w", err)
		}
		return n, nil
	}
	if !st.Mode().IsRegular() {
		return 0, errors.New("not a block device or regular file")
	}
	return uint64(st.Size()), nil
}
