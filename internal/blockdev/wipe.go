package blockdev

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// wipeSpan is how much is zeroed at each end of the disk and of each old
// partition: it covers every partition table, filesystem, RAID and LVM
// signature that blkid would find.
const wipeSpan = 1 * MiB

// Wipe erases the signatures of dev and of its partitions (the first and
// last MiB of each), then drops the kernel's partitions. Run CheckUsable
// first: Wipe opens dev exclusively and fails if it is in use.
func Wipe(dev string) error {
	name, _, err := blockID(dev)
	if err != nil {
		return fmt.Errorf("wiping %s: %w", dev, err)
	}
	f, err := OpenExclusive(dev)
	if err != nil {
		return err
	}
	defer f.Close()
	size, _, err := geometryOf(f)
	if err != nil {
		return fmt.Errorf("wiping %s: %w", dev, err)
	}
	parts, err := sysPartitions(name)
	if err != nil {
		return fmt.Errorf("wiping %s: %w", dev, err)
	}
	regions := [][2]uint64{{0, size}}
	for _, p := range parts {
		regions = append(regions, [2]uint64{p.Start, p.Size})
	}
	for _, r := range regions {
		if err := zeroEnds(f, r[0], r[1]); err != nil {
			return fmt.Errorf("wiping %s: %w", dev, err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("wiping %s: sync: %w", dev, err)
	}
	for _, p := range parts {
		if err := blkpg(f, unix.BLKPG_DEL_PARTITION, p.Number, 0, 0); err != nil && !errors.Is(err, unix.ENXIO) {
			return fmt.Errorf("wiping %s: removing partition %s: %w", dev, p.Name, err)
		}
	}
	// Let a kernel that parses partition tables forget the old one; without
	// partition support (EINVAL) there is nothing to forget.
	if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("wiping %s: BLKRRPART: %w", dev, err)
	}
	return f.Close()
}

// WipeTable zeroes the MBR and both GPTs of dev, so that a disk whose
// install failed half-way can never be booted; partitions and their data
// are left alone.
func WipeTable(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("wiping partition table: %w", err)
	}
	defer f.Close()
	size, ss, err := geometryOf(f)
	if err != nil {
		return fmt.Errorf("wiping partition table of %s: %w", dev, err)
	}
	g, err := newGeometry(size, ss)
	if err != nil {
		// Too small for a GPT: clear what could hold an MBR.
		if err := zeroRange(f, 0, min(size, uint64(ss))); err != nil {
			return fmt.Errorf("wiping partition table of %s: %w", dev, err)
		}
		return f.Sync()
	}
	if err := zeroRange(f, 0, g.firstUsable*g.ss); err != nil {
		return fmt.Errorf("wiping partition table of %s: %w", dev, err)
	}
	if err := zeroRange(f, (g.lastUsable+1)*g.ss, (g.lastLBA-g.lastUsable)*g.ss); err != nil {
		return fmt.Errorf("wiping partition table of %s: %w", dev, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("wiping partition table of %s: sync: %w", dev, err)
	}
	return f.Close()
}

// zeroEnds zeroes the first and last wipeSpan bytes of [start, start+size).
func zeroEnds(f *os.File, start, size uint64) error {
	n := min(size, wipeSpan)
	if err := zeroRange(f, start, n); err != nil {
		return err
	}
	if size > n {
		tail := min(size-n, wipeSpan)
		return zeroRange(f, start+size-tail, tail)
	}
	return nil
}

func zeroRange(f *os.File, off, n uint64) error {
	buf := make([]byte, min(n, wipeSpan))
	for done := uint64(0); done < n; {
		k := min(uint64(len(buf)), n-done)
		if _, err := f.WriteAt(buf[:k], int64(off+done)); err != nil {
			return fmt.Errorf("zeroing %d bytes at %d: %w", k, off+done, err)
		}
		done += k
	}
	return nil
}
