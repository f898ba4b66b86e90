package blockdev

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// sysfsRoot is where the kernel describes block devices.
const sysfsRoot = "/sys/class/block"

// blockID resolves dev (following symlinks) to its kernel name and device
// number; it fails for anything but a block device.
func blockID(dev string) (name string, rdev uint64, err error) {
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return "", 0, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return "", 0, fmt.Errorf("%s is not a block device", dev)
	}
	link, err := os.Readlink(fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)))
	if err != nil {
		return "", 0, fmt.Errorf("finding %s in sysfs: %w", dev, err)
	}
	return filepath.Base(link), st.Rdev, nil
}

// sysPart is a partition as the kernel knows it.
type sysPart struct {
	Name   string
	Number int
	Dev    uint64
	Start  uint64 // bytes
	Size   uint64 // bytes
}

// sysPartitions lists the kernel's partitions of the disk called name.
func sysPartitions(name string) ([]sysPart, error) {
	dir := filepath.Join(sysfsRoot, name)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []sysPart
	for _, e := range ents {
		pdir := filepath.Join(dir, e.Name())
		num, err := readUint(filepath.Join(pdir, "partition"))
		if err != nil {
			continue // not a partition directory
		}
		p := sysPart{Name: e.Name(), Number: int(num)}
		// sysfs counts start and size in 512-byte units whatever the sector size.
		if s, err := readUint(filepath.Join(pdir, "start")); err == nil {
			p.Start = s * 512
		}
		if s, err := readUint(filepath.Join(pdir, "size")); err == nil {
			p.Size = s * 512
		}
		if d, err := readDevNum(filepath.Join(pdir, "dev")); err == nil {
			p.Dev = d
		}
		out = append(out, p)
	}
	return out, nil
}

// holdersOf lists /sys/class/block/<name>/holders.
func holdersOf(name string) []string {
	ents, err := os.ReadDir(filepath.Join(sysfsRoot, name, "holders"))
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(ents))
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func readUint(p string) (uint64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// readDevNum parses a sysfs "MAJ:MIN" file.
func readDevNum(p string) (uint64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	return parseDevNum(strings.TrimSpace(string(b)))
}

func parseDevNum(s string) (uint64, error) {
	maj, min, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("bad device number %q", s)
	}
	a, err := strconv.ParseUint(maj, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("bad device number %q", s)
	}
	b, err := strconv.ParseUint(min, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("bad device number %q", s)
	}
	return unix.Mkdev(uint32(a), uint32(b)), nil
}

// waitBlockNode waits until path is the block device rdev. devtmpfs creates
// nodes asynchronously to the ioctl that adds the device; when it has not
// after the timeout (no devtmpfs on /dev), the node is made by hand.
func waitBlockNode(ctx context.Context, path string, rdev uint64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var st unix.Stat_t
		err := unix.Stat(path, &st)
		if err == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK && st.Rdev == rdev {
			return nil
		}
		if time.Now().After(deadline) {
			if errors.Is(err, unix.ENOENT) {
				if err := unix.Mknod(path, unix.S_IFBLK|0o660, int(rdev)); err != nil && !errors.Is(err, unix.EEXIST) {
					return fmt.Errorf("creating device node %s: %w", path, err)
				}
				continue
			}
			if err == nil {
				return fmt.Errorf("%s is not block device %d:%d", path, unix.Major(rdev), unix.Minor(rdev))
			}
			return fmt.Errorf("waiting for %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
