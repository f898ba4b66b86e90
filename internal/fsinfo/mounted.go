package fsinfo

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fsIocGetFSUUID is FS_IOC_GETFSUUID, _IOR(0x15, 0, struct fsuuid2): a
// 1-byte length and up to 16 bytes of UUID (Linux 6.5 and later).
const fsIocGetFSUUID = 0x80111500

// MountedUUID asks the kernel for the UUID of the filesystem mounted at dir,
// for when its device cannot be read (a container without the host's /dev,
// a device the cgroup denies). ext4, xfs and btrfs report it.
func MountedUUID(dir string) (string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return "", fmt.Errorf("reading filesystem UUID of %s: %w", dir, err)
	}
	defer f.Close()
	var u struct {
		Len  uint8
		UUID [16]byte
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fsIocGetFSUUID, uintptr(unsafe.Pointer(&u))); e != 0 {
		return "", fmt.Errorf("reading filesystem UUID of %s: %w", dir, e)
	}
	if u.Len != 16 {
		return "", fmt.Errorf("reading filesystem UUID of %s: the kernel reports a %d-byte UUID", dir, u.Len)
	}
	return formatUUID(u.UUID[:]), nil
}
