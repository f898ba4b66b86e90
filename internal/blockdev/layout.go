package blockdev

import (
	"github.com/bootlace/bootlace/internal/errs"
)

// Sizes of the bootc x86_64 layout.
const (
	MiB = 1 << 20
	GiB = 1 << 30

	Alignment       = 1 * MiB
	BIOSBootSize    = 1 * MiB
	DefaultESPSize  = 512 * MiB
	DefaultBootSize = 1 * GiB
	// MinRootSize refuses layouts whose root could not hold even a minimal
	// deployment; the real space check against the image happens later.
	MinRootSize = 256 * MiB
)

// Partition names bootc uses; filesystem labels match them.
const (
	NameBIOSBoot = "BIOS-BOOT"
	NameESP      = "EFI-SYSTEM"
	NameBoot     = "boot"
	NameRoot     = "root"
)

// LayoutOptions adjusts PlanBootcLayout. Zero values give bootc's layout
// with a separate 1 GiB /boot.
type LayoutOptions struct {
	// RootSize is the root partition size in bytes; 0 fills the disk.
	RootSize uint64
	// ESPSize defaults to DefaultESPSize.
	ESPSize uint64
	// BootSize defaults to DefaultBootSize.
	BootSize uint64
	// NoBoot omits the separate /boot partition.
	NoBoot bool
	// NoBIOSBoot omits BIOS-BOOT (UEFI-only); required on 4Kn disks.
	NoBIOSBoot bool
}

// PlanBootcLayout returns the x86_64 partitions bootc creates, 1 MiB
// aligned and numbered from 1: BIOS-BOOT, EFI-SYSTEM, boot, root (with the
// Discoverable Partitions x86_64 root type). Sizes are bytes.
func PlanBootcLayout(diskSize uint64, sectorSize uint32, opts LayoutOptions) ([]Partition, error) {
	espSize := opts.ESPSize
	if espSize == 0 {
		espSize = DefaultESPSize
	}
	bootSize := opts.BootSize
	if bootSize == 0 {
		bootSize = DefaultBootSize
	}
	if espSize%Alignment != 0 || bootSize%Alignment != 0 || opts.RootSize%Alignment != 0 {
		return nil, errs.Newf(errs.Usage, "give partition sizes in whole MiB",
			"partition sizes must be multiples of 1 MiB (ESP %d, boot %d, root %d)", espSize, bootSize, opts.RootSize)
	}
	if !opts.NoBIOSBoot && sectorSize != 512 {
		// GRUB's i386-pc core image and boot.img assume 512-byte sectors.
		return nil, errs.Newf(errs.Target, "install for UEFI only on this disk",
			"BIOS boot needs 512-byte sectors, but the disk has %d-byte logical sectors", sectorSize)
	}
	first, last, err := UsableRange(diskSize, sectorSize)
	if err != nil {
		return nil, errs.New(errs.Target, "planning partitions", "", err, "use a larger disk")
	}
	start := alignUp(first, Alignment)
	end := last / Alignment * Alignment

	var parts []Partition
	next := start
	add := func(name string, typ GUID, size, attrs uint64) {
		parts = append(parts, Partition{Number: len(parts) + 1, Name: name, Type: typ, Start: next, Size: size, Attributes: attrs})
		next += size
	}
	if !opts.NoBIOSBoot {
		add(NameBIOSBoot, TypeBIOSBoot, BIOSBootSize, AttrLegacyBIOSBootable)
	}
	add(NameESP, TypeESP, espSize, 0)
	if !opts.NoBoot {
		add(NameBoot, TypeLinuxData, bootSize, 0)
	}

	rootMin := uint64(MinRootSize)
	if opts.RootSize != 0 {
		rootMin = max(opts.RootSize, rootMin)
	}
	if next > end || end-next < rootMin {
		avail := uint64(0)
		if end > next {
			avail = end - next
		}
		return nil, errs.Newf(errs.Target, "use a larger disk or a smaller --root-size",
			"disk of %d bytes (%d MiB) is too small: the GPT and boot partitions take %d MiB and leave %d MiB for root, which needs %d MiB",
			diskSize, diskSize/MiB, next/MiB, avail/MiB, rootMin/MiB)
	}
	rootSize := end - next
	if opts.RootSize != 0 {
		rootSize = opts.RootSize
	}
	add(NameRoot, TypeRootX86_64, rootSize, 0)
	return parts, nil
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) / a * a }
