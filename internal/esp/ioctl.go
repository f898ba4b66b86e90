package esp

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctlUint64 runs an ioctl that stores a uint64 through its argument.
func ioctlUint64(fd int, req uint, out *uint64) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(out)))
	if e != 0 {
		return e
	}
	return nil
}
