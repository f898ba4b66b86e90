package blockdev

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctlPtr runs an ioctl whose argument is a pointer.
func ioctlPtr(fd uintptr, req uint, arg unsafe.Pointer) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), uintptr(arg))
	if e != 0 {
		return e
	}
	return nil
}

// deviceSize returns BLKGETSIZE64 of an open block device.
func deviceSize(f *os.File) (uint64, error) {
	var n uint64
	if err := ioctlPtr(f.Fd(), unix.BLKGETSIZE64, unsafe.Pointer(&n)); err != nil {
		return 0, fmt.Errorf("BLKGETSIZE64: %w", err)
	}
	return n, nil
}

// sectorSize returns the logical sector size (BLKSSZGET) of a block device.
func sectorSize(f *os.File) (uint32, error) {
	n, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET)
	if err != nil {
		return 0, fmt.Errorf("BLKSSZGET: %w", err)
	}
	return uint32(n), nil
}

// geometryOf returns the size and logical sector size of a block device, or
// of a regular file taken as a disk image with 512-byte sectors.
func geometryOf(f *os.File) (size uint64, ss uint32, err error) {
	st, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	switch {
	case st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		if size, err = deviceSize(f); err != nil {
			return 0, 0, err
		}
		if ss, err = sectorSize(f); err != nil {
			return 0, 0, err
		}
		return size, ss, nil
	case st.Mode().IsRegular():
		return uint64(st.Size()), 512, nil
	default:
		return 0, 0, errors.New("not a block device or regular file")
	}
}
