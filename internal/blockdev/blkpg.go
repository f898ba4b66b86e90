package blockdev

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
	"unicode"
	"unsafe"

	"golang.org/x/sys/unix"
)

// nodeTimeout bounds the wait for devtmpfs to create a partition node.
const nodeTimeout = 5 * time.Second

// PartitionPath returns the device path of partition n of disk dev:
// /dev/loop0 -> /dev/loop0p1, /dev/sda -> /dev/sda1, /dev/nvme0n1 -> /dev/nvme0n1p1.
func PartitionPath(dev string, n int) string {
	base := filepath.Base(dev)
	if base != "" && unicode.IsDigit(rune(base[len(base)-1])) {
		return dev + "p" + strconv.Itoa(n)
	}
	return dev + strconv.Itoa(n)
}

// AddPartitions tells the kernel about parts on disk dev with BLKPG, since
// the kernel may lack a GPT parser, and waits for their device nodes. A
// partition the kernel already has with the same start and size is kept;
// one with other bounds is replaced.
func AddPartitions(dev string, parts []Partition) error {
	return AddPartitionsContext(context.Background(), dev, parts)
}

// AddPartitionsContext is AddPartitions with a context for the node wait.
func AddPartitionsContext(ctx context.Context, dev string, parts []Partition) error {
	name, _, err := blockID(dev)
	if err != nil {
		return fmt.Errorf("adding partitions to %s: %w", dev, err)
	}
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("adding partitions: %w", err)
	}
	defer f.Close()
	existing, err := sysPartitions(name)
	if err != nil {
		return fmt.Errorf("adding partitions to %s: %w", dev, err)
	}
	for _, p := range parts {
		if i := indexPart(existing, p.Number); i >= 0 {
			if existing[i].Start == p.Start && existing[i].Size == p.Size {
				continue
			}
			if err := blkpg(f, unix.BLKPG_DEL_PARTITION, p.Number, 0, 0); err != nil {
				return fmt.Errorf("replacing partition %d of %s: %w", p.Number, dev, err)
			}
		}
		if err := blkpg(f, unix.BLKPG_ADD_PARTITION, p.Number, p.Start, p.Size); err != nil {
			return fmt.Errorf("adding partition %d (%d+%d bytes) to %s: %w", p.Number, p.Start, p.Size, dev, err)
		}
	}
	// Wait for the nodes only after all adds, so devtmpfs works in parallel.
	now, err := sysPartitions(name)
	if err != nil {
		return fmt.Errorf("adding partitions to %s: %w", dev, err)
	}
	for _, p := range parts {
		i := indexPart(now, p.Number)
		if i < 0 {
			return fmt.Errorf("adding partitions to %s: partition %d is missing from sysfs", dev, p.Number)
		}
		if err := waitBlockNode(ctx, PartitionPath(dev, p.Number), now[i].Dev, nodeTimeout); err != nil {
			return fmt.Errorf("adding partitions to %s: %w", dev, err)
		}
	}
	return nil
}

// RemovePartitions removes every partition the kernel has for disk dev.
// A partition that is mounted or open exclusively makes it fail with EBUSY.
func RemovePartitions(dev string) error {
	name, _, err := blockID(dev)
	if err != nil {
		return fmt.Errorf("removing partitions of %s: %w", dev, err)
	}
	parts, err := sysPartitions(name)
	if err != nil {
		return fmt.Errorf("removing partitions of %s: %w", dev, err)
	}
	if len(parts) == 0 {
		return nil
	}
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("removing partitions: %w", err)
	}
	defer f.Close()
	var errs []error
	for _, p := range parts {
		if err := blkpg(f, unix.BLKPG_DEL_PARTITION, p.Number, 0, 0); err != nil && !errors.Is(err, unix.ENXIO) {
			errs = append(errs, fmt.Errorf("removing partition %s: %w", p.Name, err))
		}
	}
	return errors.Join(errs...)
}

func indexPart(ps []sysPart, n int) int {
	for i, p := range ps {
		if p.Number == n {
			return i
		}
	}
	return -1
}

// blkpg issues one BLKPG request; start and size are in bytes.
func blkpg(f *os.File, op int32, pno int, start, size uint64) error {
	part := unix.BlkpgPartition{Start: int64(start), Length: int64(size), Pno: int32(pno)}
	arg := unix.BlkpgIoctlArg{
		Op:      op,
		Datalen: int32(unsafe.Sizeof(part)),
		Data:    (*byte)(unsafe.Pointer(&part)),
	}
	return ioctlPtr(f.Fd(), unix.BLKPG, unsafe.Pointer(&arg))
}
