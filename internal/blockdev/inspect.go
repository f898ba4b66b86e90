package blockdev

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bootlace/bootlace/internal/errs"
	"golang.org/x/sys/unix"
)

// Disk is what Inspect found out about a whole block device.
type Disk struct {
	Path       string
	Name       string // kernel name, e.g. "loop0", "sda"
	Dev        uint64 // device number
	Size       uint64 // bytes
	SectorSize uint32 // logical sector size
	ReadOnly   bool
	// Table is "gpt", "dos" or "" (none found).
	Table string
	// Signature names a filesystem or volume signature at the start of the
	// whole disk ("ext4", "xfs", "LVM2_member", ...), or "".
	Signature  string
	Partitions []DiskPartition
	// Holders are devices stacked on the disk or its partitions.
	Holders []Holder
	// Mounts are mounts of the disk or its partitions in this process's or
	// pid 1's mount namespace.
	Mounts []Mount
	// HoldsRoot is set when / of this process or of pid 1 is on the disk.
	HoldsRoot bool
	// Swaps lists active swap devices on the disk.
	Swaps []string
}

// DiskPartition is a partition the kernel knows.
type DiskPartition struct {
	Number    int
	Name      string
	Path      string
	Dev       uint64
	Start     uint64 // bytes
	Size      uint64 // bytes
	Signature string
}

// Holder is a device (dm-0, md127) built on Of (the disk or a partition).
type Holder struct {
	Holder string
	Of     string
}

// Mount is a mount of a device of the disk.
type Mount struct {
	Device    string // e.g. /dev/loop0p3
	Target    string
	Namespace string // "self" or "pid 1"
}

// HasContent reports whether the disk has a partition table, partitions or
// a signature, i.e. whether writing it destroys something.
func (d *Disk) HasContent() bool {
	return d.Table != "" || len(d.Partitions) > 0 || d.Signature != ""
}

// Inspect gathers size, sector size, partition table, partitions and every
// sign of use of the whole block device dev.
func Inspect(dev string) (*Disk, error) {
	name, rdev, err := blockID(dev)
	if err != nil {
		return nil, errs.New(errs.Target, "inspecting", dev, err, "give a whole block device such as /dev/sdX, or an image file with --via-loopback")
	}
	if _, err := os.Stat(filepath.Join(sysfsRoot, name, "partition")); err == nil {
		return nil, errs.New(errs.Target, "inspecting", dev, errors.New("is a partition, not a whole disk"), "give the whole disk; use install to-filesystem for a single partition")
	}
	d := &Disk{Path: dev, Name: name, Dev: rdev}
	devs := map[uint64]string{rdev: dev}
	parts, err := sysPartitions(name)
	if err != nil {
		return nil, fmt.Errorf("inspecting %s: %w", dev, err)
	}
	slices.SortFunc(parts, func(a, b sysPart) int { return a.Number - b.Number })
	for _, p := range parts {
		dp := DiskPartition{Number: p.Number, Name: p.Name, Path: "/dev/" + p.Name, Dev: p.Dev, Start: p.Start, Size: p.Size}
		d.Partitions = append(d.Partitions, dp)
		devs[p.Dev] = dp.Path
		for _, h := range holdersOf(p.Name) {
			d.Holders = append(d.Holders, Holder{Holder: h, Of: dp.Path})
		}
	}
	for _, h := range holdersOf(name) {
		d.Holders = append(d.Holders, Holder{Holder: h, Of: dev})
	}
	if ro, err := readUint(filepath.Join(sysfsRoot, name, "ro")); err == nil {
		d.ReadOnly = ro != 0
	}
	for _, ns := range []struct{ file, label string }{{"/proc/self/mountinfo", "self"}, {"/proc/1/mountinfo", "pid 1"}} {
		ms, err := mountsOn(ns.file, devs)
		if err != nil {
			return nil, fmt.Errorf("inspecting %s: %w", dev, err)
		}
		for _, m := range ms {
			m.Namespace = ns.label
			if !slices.ContainsFunc(d.Mounts, func(o Mount) bool { return o.Device == m.Device && o.Target == m.Target }) {
				d.Mounts = append(d.Mounts, m)
			}
			if m.Target == "/" {
				d.HoldsRoot = true
			}
		}
	}
	for _, root := range []string{"/", "/proc/1/root"} {
		var st unix.Stat_t
		if err := unix.Stat(root, &st); err == nil {
			if _, ok := devs[st.Dev]; ok {
				d.HoldsRoot = true
			}
		}
	}
	if d.Swaps, err = swapsOn("/proc/swaps", devs); err != nil {
		return nil, fmt.Errorf("inspecting %s: %w", dev, err)
	}
	if err := d.probe(); err != nil {
		if d.inUse() {
			// The usage already refuses the disk; a host that forbids
			// opening its system disk should still get that message.
			return d, nil
		}
		return nil, errs.New(errs.Target, "inspecting", dev, err, "")
	}
	return d, nil
}

func (d *Disk) inUse() bool {
	return d.HoldsRoot || len(d.Mounts) > 0 || len(d.Swaps) > 0 || len(d.Holders) > 0
}

// probe reads size, sector size, partition table and signatures; without
// it (device not openable) Size comes from sysfs and the rest stays empty.
func (d *Disk) probe() error {
	if n, err := readUint(filepath.Join(sysfsRoot, d.Name, "size")); err == nil {
		d.Size = n * 512
	}
	if n, err := readUint(filepath.Join(sysfsRoot, d.Name, "queue", "logical_block_size")); err == nil {
		d.SectorSize = uint32(n)
	}
	f, err := os.OpenFile(d.Path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if d.Size, d.SectorSize, err = geometryOf(f); err != nil {
		return err
	}
	head := readAt(f, 0, 128<<10)
	d.Table = tableType(f, head, d.Size, d.SectorSize)
	if d.Table == "" {
		d.Signature = probeSignature(head)
	}
	for i := range d.Partitions {
		p := &d.Partitions[i]
		p.Signature = probeSignature(readAt(f, int64(p.Start), int(min(128<<10, p.Size))))
	}
	return nil
}

// CheckUsable refuses a disk that is in use, and one with content unless
// wipe is set. Every error is errs.Target and says what to do.
func CheckUsable(d *Disk, wipe bool) error {
	fail := func(what, hint string) error {
		return errs.New(errs.Target, "disk", d.Path, errors.New(what), hint)
	}
	if d.HoldsRoot {
		return fail("holds the running system's root filesystem", "choose another disk")
	}
	if len(d.Mounts) > 0 {
		var todo []string
		for _, m := range d.Mounts {
			todo = append(todo, fmt.Sprintf("unmount %s (mounted at %s)", m.Device, m.Target))
		}
		return fail("is mounted", strings.Join(todo, "; "))
	}
	if len(d.Swaps) > 0 {
		return fail("is used as swap", "swapoff "+strings.Join(d.Swaps, " "))
	}
	if len(d.Holders) > 0 {
		h := d.Holders[0]
		kind := "another device"
		switch {
		case strings.HasPrefix(h.Holder, "dm-"):
			kind = "LVM or device-mapper"
		case strings.HasPrefix(h.Holder, "md"):
			kind = "MD RAID"
		}
		return fail(fmt.Sprintf("is in use by %s (%s, on %s)", h.Holder, kind, h.Of), "deactivate it first")
	}
	if d.ReadOnly {
		return fail("is read-only", "choose a writable disk")
	}
	if !wipe {
		switch {
		case d.Table != "":
			return fail(fmt.Sprintf("has a partition table (%s)", d.Table), "pass --wipe to erase it")
		case len(d.Partitions) > 0:
			return fail(fmt.Sprintf("has %d partitions", len(d.Partitions)), "pass --wipe to erase them")
		case d.Signature != "":
			return fail(fmt.Sprintf("has a %s signature", d.Signature), "pass --wipe to erase it")
		}
	}
	return nil
}

// OpenExclusive opens dev read-write with O_EXCL, which the kernel refuses
// while the device or one of its partitions is mounted or claimed. Holding
// it blocks mkfs and mount on the partitions too, so close it before those.
func OpenExclusive(dev string) (*os.File, error) {
	f, err := os.OpenFile(dev, os.O_RDWR|os.O_EXCL|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EBUSY) {
		return nil, errs.New(errs.Target, "opening", dev, errors.New("in use"), "it or a partition is mounted, part of LVM/RAID, or open exclusively by another program")
	}
	if err != nil {
		return nil, errs.New(errs.Target, "opening", dev, err, "")
	}
	return f, nil
}

// readAt reads up to n bytes at off, returning what could be read.
func readAt(f *os.File, off int64, n int) []byte {
	b := make([]byte, n)
	k, _ := f.ReadAt(b, off)
	return b[:k]
}

// tableType recognises a GPT (primary, or backup when the primary was
// destroyed) and an MBR partition table.
func tableType(f *os.File, head []byte, size uint64, ss uint32) string {
	if len(head) >= int(2*ss) && string(head[ss:ss+8]) == "EFI PART" {
		return "gpt"
	}
	if size >= uint64(ss) {
		if b := readAt(f, int64(size-uint64(ss)), 8); string(b) == "EFI PART" {
			return "gpt"
		}
	}
	if len(head) < 512 || head[510] != 0x55 || head[511] != 0xaa || isFATBoot(head) {
		return ""
	}
	for i := 0; i < 4; i++ {
		e := head[446+16*i : 462+16*i]
		if e[0] != 0 && e[0] != 0x80 {
			return ""
		}
		if e[4] == 0xee {
			return "gpt"
		}
	}
	for i := 0; i < 4; i++ {
		if head[446+16*i+4] != 0 {
			return "dos"
		}
	}
	return ""
}

func isFATBoot(b []byte) bool {
	return len(b) >= 90 && (string(b[54:57]) == "FAT" || string(b[82:87]) == "FAT32" || string(b[3:7]) == "NTFS")
}

// probeSignature names the filesystem or volume signature at the start of b.
func probeSignature(b []byte) string {
	at := func(off int, magic string) bool {
		return len(b) >= off+len(magic) && string(b[off:off+len(magic)]) == magic
	}
	le32 := func(off int) uint32 {
		if len(b) < off+4 {
			return 0
		}
		return binary.LittleEndian.Uint32(b[off:])
	}
	switch {
	case at(0, "LUKS\xba\xbe"):
		return "crypto_LUKS"
	case at(0, "XFSB"):
		return "xfs"
	case at(0, "hsqs"):
		return "squashfs"
	case at(65600, "_BHRfS_M"):
		return "btrfs"
	case len(b) >= 1082 && binary.LittleEndian.Uint16(b[1080:]) == 0xef53:
		return "ext4"
	case le32(1024) == 0xe0f5e1e2:
		return "erofs"
	case at(512, "LABELONE"):
		return "LVM2_member"
	case le32(0) == 0xa92b4efc || le32(4096) == 0xa92b4efc:
		return "linux_raid_member"
	case at(4086, "SWAPSPACE2"), at(4086, "SWAP-SPACE"):
		return "swap"
	case at(32769, "CD001"):
		return "iso9660"
	case len(b) >= 512 && b[510] == 0x55 && b[511] == 0xaa && isFATBoot(b):
		if at(3, "NTFS") {
			return "ntfs"
		}
		return "vfat"
	}
	return ""
}

// mountsOn returns the mounts in a mountinfo file whose device is one of
// devs. Devices are matched by number (field 3), and also by the number of
// the mount source, because btrfs reports an anonymous device in field 3.
func mountsOn(file string, devs map[uint64]string) ([]Mount, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseMountinfo(f, devs, func(src string) (uint64, bool) {
		var st unix.Stat_t
		if !strings.HasPrefix(src, "/") || unix.Stat(src, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
			return 0, false
		}
		return st.Rdev, true
	})
}

func parseMountinfo(r io.Reader, devs map[uint64]string, srcDev func(string) (uint64, bool)) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if len(fields) < 5 || sep < 0 || sep+2 >= len(fields) {
			continue
		}
		target := unescapeMount(fields[4])
		source := unescapeMount(fields[sep+2])
		if n, err := parseDevNum(fields[2]); err == nil {
			if p, ok := devs[n]; ok {
				out = append(out, Mount{Device: p, Target: target})
				continue
			}
		}
		if n, ok := srcDev(source); ok {
			if p, ok := devs[n]; ok {
				out = append(out, Mount{Device: p, Target: target})
			}
		}
	}
	return out, sc.Err()
}

// unescapeMount undoes the octal escapes (\040 for space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b bytes.Buffer
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// swapsOn returns the active swap areas of /proc/swaps that are in devs.
func swapsOn(file string, devs map[uint64]string) ([]string, error) {
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for i, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if i == 0 || len(fields) == 0 {
			continue
		}
		name := unescapeMount(fields[0])
		var st unix.Stat_t
		if unix.Stat(name, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
			continue
		}
		if _, ok := devs[st.Rdev]; ok {
			out = append(out, name)
		}
	}
	return out, nil
}
