package grub

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/bootlace/bootlace/internal/errs"
)

// i386-pc layout constants (include/grub/i386/pc/boot.h, offsets.h; the
// same in GRUB 2.06 and 2.12).
const (
	sectorSize = 512

	mbrBPBStart     = 0x03  // GRUB_BOOT_MACHINE_BPB_START
	mbrBPBEnd       = 0x5A  // GRUB_BOOT_MACHINE_BPB_END
	mbrKernelSector = 0x5C  // u64 LE: LBA of core.img's first sector
	mbrBootDrive    = 0x64  // 0xFF: use the drive the BIOS passed in DL
	mbrDriveCheck   = 0x66  // "jmp +5" becomes two NOPs for hard disks
	mbrNTMagic      = 0x1B8 // disk signature, then the partition table
	mbrPartEnd      = 0x1FE // end of the partition table

	blocklistSize = 12     // struct grub_pc_bios_boot_blocklist
	coreSegment   = 0x0820 // GRUB_BOOT_I386_PC_KERNEL_SEG + (512 >> 4)
)

// patchCore returns core.img padded to whole sectors with its blocklist
// pointing at the sectors that follow start, where start is the disk LBA
// (512-byte units) of its first sector. It mirrors grub-bios-setup's
// embedding of a contiguous area without Reed-Solomon codes.
func patchCore(core []byte, start uint64) ([]byte, error) {
	if len(core) < sectorSize {
		return nil, fmt.Errorf("core.img is %d bytes, smaller than one sector", len(core))
	}
	n := (len(core) + sectorSize - 1) / sectorSize
	if n > maxCoreSectors {
		return nil, fmt.Errorf("core.img has %d sectors, at most %d can be embedded", n, maxCoreSectors)
	}
	out := make([]byte, n*sectorSize)
	copy(out, core)

	// Clear the list grub-mkimage left (one placeholder entry), walking
	// down from the end of the first sector to the terminator.
	first := sectorSize - blocklistSize
	off := first
	for ; off > 0; off -= blocklistSize {
		if binary.LittleEndian.Uint16(out[off+8:]) == 0 {
			break
		}
		clear(out[off : off+blocklistSize])
	}
	if off <= 0 {
		return nil, errors.New("core.img has no blocklist terminator; not an i386-pc diskboot image")
	}
	if n > 1 {
		binary.LittleEndian.PutUint64(out[first:], start+1)
		binary.LittleEndian.PutUint16(out[first+8:], uint16(n-1))
		binary.LittleEndian.PutUint16(out[first+10:], coreSegment)
	}
	return out, nil
}

// composeMBR returns the new sector 0: boot.img's code around the old
// sector's BPB area, disk signature and partition table, with the core
// image's LBA and the hard-disk patches applied.
func composeMBR(old, boot []byte, coreStart uint64) ([]byte, error) {
	if len(boot) != sectorSize {
		return nil, fmt.Errorf("boot.img is %d bytes, want %d", len(boot), sectorSize)
	}
	if len(old) != sectorSize {
		return nil, fmt.Errorf("old sector 0 is %d bytes, want %d", len(old), sectorSize)
	}
	mbr := bytes.Clone(boot)
	copy(mbr[mbrBPBStart:mbrBPBEnd], old[mbrBPBStart:mbrBPBEnd])
	copy(mbr[mbrNTMagic:mbrPartEnd], old[mbrNTMagic:mbrPartEnd])
	binary.LittleEndian.PutUint64(mbr[mbrKernelSector:], coreStart)
	mbr[mbrBootDrive] = 0xFF
	mbr[mbrDriveCheck] = 0x90
	mbr[mbrDriveCheck+1] = 0x90
	return mbr, nil
}

// InstallBIOS embeds coreImg at the start of the BIOS boot partition
// (biosBootStartLBA, biosBootSectors, in 512-byte sectors) of dev and then
// writes bootImg into sector 0, keeping the sector's BPB area, disk
// signature and partition table, as grub-bios-setup --no-rs-codes does.
// dev is a whole-disk block device or a disk image file. Call it after the
// last partition-table write: sector 0 is read afresh here.
func InstallBIOS(dev string, bootImg, coreImg []byte, biosBootStartLBA, biosBootSectors uint64) error {
	const op = "installing GRUB for BIOS on"
	if biosBootStartLBA < 2 {
		return fmt.Errorf("%s %s: BIOS boot partition start %d overlaps the MBR or GPT header", op, dev, biosBootStartLBA)
	}
	core, err := patchCore(coreImg, biosBootStartLBA)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, dev, err)
	}
	if n := uint64(len(core) / sectorSize); n > biosBootSectors {
		return errs.New(errs.Target, op, dev,
			fmt.Errorf("core.img needs %d sectors, the BIOS boot partition has %d", n, biosBootSectors),
			"make the BIOS boot partition 1 MiB")
	}

	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, dev, err)
	}
	defer f.Close()
	if err := checkDisk(f, biosBootStartLBA+uint64(len(core)/sectorSize)); err != nil {
		return fmt.Errorf("%s %s: %w", op, dev, err)
	}

	// setup.c's order: core image first, sector 0 last, so a failure in
	// between leaves the old MBR pointing at whatever it pointed at.
	coreOff := int64(biosBootStartLBA) * sectorSize
	if err := writeSync(f, core, coreOff); err != nil {
		return fmt.Errorf("%s %s: writing core.img: %w", op, dev, err)
	}
	old := make([]byte, sectorSize)
	if _, err := f.ReadAt(old, 0); err != nil {
		return fmt.Errorf("%s %s: reading sector 0: %w", op, dev, err)
	}
	mbr, err := composeMBR(old, bootImg, biosBootStartLBA)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, dev, err)
	}
	if err := writeSync(f, mbr, 0); err != nil {
		return fmt.Errorf("%s %s: writing sector 0: %w", op, dev, err)
	}
	if err := verify(f, core, coreOff); err != nil {
		return fmt.Errorf("%s %s: core.img: %w", op, dev, err)
	}
	if err := verify(f, mbr, 0); err != nil {
		return fmt.Errorf("%s %s: sector 0: %w", op, dev, err)
	}
	return nil
}

// checkDisk refuses block devices whose logical sector size is not 512:
// GRUB's i386-pc boot code counts 512-byte sectors and hands them to INT
// 13h, which counts native ones. It also refuses to write past the end.
func checkDisk(f *os.File, endLBA uint64) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	var size uint64
	switch {
	case fi.Mode().IsRegular():
		size = uint64(fi.Size())
	case fi.Mode()&os.ModeDevice != 0:
		ssz, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET)
		if err != nil {
			return fmt.Errorf("getting logical sector size: %w", err)
		}
		if ssz != sectorSize {
			return errs.New(errs.Target, "BIOS boot on", f.Name(),
				fmt.Errorf("logical sector size is %d, GRUB's BIOS boot code needs 512", ssz),
				"use UEFI boot only on this disk")
		}
		size, err = unix.IoctlGetUint64(int(f.Fd()), unix.BLKGETSIZE64)
		if err != nil {
			return fmt.Errorf("getting device size: %w", err)
		}
	default:
		return fmt.Errorf("not a block device or disk image")
	}
	if endLBA*sectorSize > size {
		return errs.New(errs.Target, "BIOS boot on", f.Name(),
			fmt.Errorf("core.img would end at byte %d, past the disk end %d", endLBA*sectorSize, size), "")
	}
	return nil
}

func writeSync(f *os.File, b []byte, off int64) error {
	if _, err := f.WriteAt(b, off); err != nil {
		return err
	}
	return f.Sync()
}

func verify(f *os.File, want []byte, off int64) error {
	got := make([]byte, len(want))
	if _, err := f.ReadAt(got, off); err != nil {
		return fmt.Errorf("reading back: %w", err)
	}
	if !bytes.Equal(got, want) {
		return errors.New("read-back differs from what was written")
	}
	return nil
}
