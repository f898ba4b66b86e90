package blockdev

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Loop is an attached loop device. It keeps the device open: the device is
// attached with LO_FLAGS_AUTOCLEAR, so the kernel detaches it by itself
// once the last user (this process, a mount) lets go, even if bootlace is
// killed.
type Loop struct {
	path    string
	name    string
	backing string

	mu  sync.Mutex
	dev *os.File // nil once detached
}

// attachRetries bounds the LOOP_CTL_GET_FREE/configure race with other
// processes attaching loop devices at the same time.
const attachRetries = 20

// AttachLoop attaches file to a free loop device with partition scanning
// enabled (harmless without a GPT parser, and required for BLKPG).
func AttachLoop(ctx context.Context, file string) (*Loop, error) {
	backing, err := os.OpenFile(file, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("attaching loop device: %w", err)
	}
	defer backing.Close()
	st, err := backing.Stat()
	if err != nil {
		return nil, fmt.Errorf("attaching loop device to %s: %w", file, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("attaching loop device to %s: not a regular file", file)
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		abs = file
	}
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("attaching loop device to %s: %w (is the loop module loaded?)", file, err)
	}
	defer ctl.Close()

	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("attaching loop device to %s: %w", file, err)
		}
		l, err := tryAttach(ctx, ctl, backing, abs)
		if err == nil {
			return l, nil
		}
		// EBUSY: another process took the device between GET_FREE and
		// configure; ask for another one.
		if !errors.Is(err, unix.EBUSY) || attempt >= attachRetries {
			return nil, fmt.Errorf("attaching loop device to %s: %w", file, err)
		}
		time.Sleep(time.Duration(attempt+1) * 5 * time.Millisecond)
	}
}

func tryAttach(ctx context.Context, ctl, backing *os.File, abs string) (*Loop, error) {
	n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
	if err != nil {
		return nil, fmt.Errorf("LOOP_CTL_GET_FREE: %w", err)
	}
	name := fmt.Sprintf("loop%d", n)
	path := "/dev/" + name
	rdev, err := readDevNum(filepath.Join(sysfsRoot, name, "dev"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := waitBlockNode(ctx, path, rdev, nodeTimeout); err != nil {
		return nil, err
	}
	dev, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	info := unix.LoopInfo64{Flags: unix.LO_FLAGS_AUTOCLEAR | unix.LO_FLAGS_PARTSCAN}
	copy(info.File_name[:len(info.File_name)-1], abs)
	cfg := unix.LoopConfig{Fd: uint32(backing.Fd()), Info: info}
	err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
		// Kernels before 5.8 lack LOOP_CONFIGURE.
		err = unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_SET_FD, int(backing.Fd()))
		if err == nil {
			if err = unix.IoctlLoopSetStatus64(int(dev.Fd()), &info); err != nil {
				_ = unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_CLR_FD, 0)
			}
		}
	}
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("configuring %s: %w", path, err)
	}
	return &Loop{path: path, name: name, backing: abs, dev: dev}, nil
}

// Path returns the loop device path, e.g. /dev/loop0.
func (l *Loop) Path() string { return l.path }

// BackingFile returns the absolute path of the attached file.
func (l *Loop) BackingFile() string { return l.backing }

// Detach removes the partitions added to the device and detaches it. It
// is safe to call more than once. If something still holds the device (a
// mount), the kernel detaches it when that goes away (autoclear) and
// Detach reports the busy partition.
func (l *Loop) Detach() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dev == nil {
		return nil
	}
	partErr := RemovePartitions(l.path)
	clrErr := unix.IoctlSetInt(int(l.dev.Fd()), unix.LOOP_CLR_FD, 0)
	if errors.Is(clrErr, unix.ENXIO) {
		clrErr = nil // already detached
	}
	closeErr := l.dev.Close()
	l.dev = nil
	if clrErr == nil {
		l.waitDetached(2 * time.Second)
	}
	if err := errors.Join(partErr, clrErr, closeErr); err != nil {
		return fmt.Errorf("detaching %s: %w", l.path, err)
	}
	return nil
}

// waitDetached waits for the kernel to finish clearing the device, which
// happens at the last close, so that callers observe a free device.
func (l *Loop) waitDetached(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(filepath.Join(sysfsRoot, l.name, "loop", "backing_file")); errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
