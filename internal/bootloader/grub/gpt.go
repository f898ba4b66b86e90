package grub

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// biosBootType is the GPT type GUID 21686148-6449-6E6F-744E-656564454649
// ("Hah!IdontNeedEFI") as stored on disk (mixed endian).
var biosBootType = []byte("Hah!IdontNeedEFI")

// FindBIOSBoot returns the first LBA and the length, in 512-byte sectors,
// of the first BIOS boot partition in the primary GPT of dev (a disk or
// disk image with 512-byte logical sectors), the one grub-bios-setup would
// use.
func FindBIOSBoot(dev string) (startLBA, sectors uint64, err error) {
	f, err := os.Open(dev)
	if err != nil {
		return 0, 0, fmt.Errorf("reading GPT of %s: %w", dev, err)
	}
	defer f.Close()
	start, n, err := findBIOSBoot(f)
	if err != nil {
		return 0, 0, fmt.Errorf("reading GPT of %s: %w", dev, err)
	}
	return start, n, nil
}

func findBIOSBoot(r io.ReaderAt) (uint64, uint64, error) {
	hdr := make([]byte, sectorSize)
	if _, err := r.ReadAt(hdr, sectorSize); err != nil {
		return 0, 0, fmt.Errorf("reading header: %w", err)
	}
	if string(hdr[:8]) != "EFI PART" {
		return 0, 0, fmt.Errorf("no GPT header at LBA 1")
	}
	entriesLBA := binary.LittleEndian.Uint64(hdr[72:])
	count := binary.LittleEndian.Uint32(hdr[80:])
	size := binary.LittleEndian.Uint32(hdr[84:])
	if size < 128 || size%8 != 0 || count == 0 || count > 16384 || entriesLBA < 2 {
		return 0, 0, fmt.Errorf("implausible GPT header (entries at LBA %d, %d × %d bytes)", entriesLBA, count, size)
	}
	table := make([]byte, int(count)*int(size))
	if _, err := r.ReadAt(table, int64(entriesLBA)*sectorSize); err != nil {
		return 0, 0, fmt.Errorf("reading partition entries: %w", err)
	}
	for i := 0; i < int(count); i++ {
		e := table[i*int(size):]
		if !bytes.Equal(e[:16], biosBootType) {
			continue
		}
		first := binary.LittleEndian.Uint64(e[32:])
		last := binary.LittleEndian.Uint64(e[40:])
		if last < first {
			return 0, 0, fmt.Errorf("BIOS boot partition %d ends before it starts", i+1)
		}
		return first, last - first + 1, nil
	}
	return 0, 0, fmt.Errorf("no BIOS boot partition (type 21686148-6449-6E6F-744E-656564454649)")
}
