package install

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/mount"
)

// DefaultExistingRoot is to-existing-root's ROOT when none is given; when it
// is not a mount point, bootlace mounts the host's root there itself.
const DefaultExistingRoot = "/target"

// ExistingRootOptions are to-existing-root's.
type ExistingRootOptions struct {
	// Root is where the running system's root filesystem is mounted; ""
	// means DefaultExistingRoot.
	Root string
	// Replace is ReplaceAlongside (the default when "") or ReplaceWipe.
	Replace string
	// Cleanup leaves bootc's stamp for removing the old system on first boot.
	Cleanup bool
	// AcknowledgeDestructive skips the wait before changing the booted root.
	AcknowledgeDestructive bool
}

// ToExistingRoot installs next to the running system, as bootc's
// to-existing-root does: onto its root filesystem, keeping the old root
// (reachable at /sysroot once the new deployment booted), with /boot and the
// ESP cleared so the new deployment is what boots. Filesystems are not
// finalized: the running system still uses them.
func ToExistingRoot(ctx context.Context, opts Options, eo ExistingRootOptions) (_ *Report, retErr error) {
	r := newRun("to-existing-root", opts)
	defer func() { retErr = errors.Join(retErr, r.stack.Unwind()) }()
	if eo.Root == "" {
		eo.Root = DefaultExistingRoot
	}
	if eo.Replace == "" {
		eo.Replace = ReplaceAlongside
	}
	if eo.Cleanup && eo.Replace != ReplaceAlongside {
		return nil, errs.New(errs.Usage, "parsing --cleanup", "", errors.New("--cleanup removes the old system kept by --replace alongside"), "drop --cleanup or use --replace alongside")
	}
	return r.toFilesystem(ctx, FSOptions{Root: eo.Root, Replace: eo.Replace, SkipFinalize: true,
		AcknowledgeDestructive: eo.AcknowledgeDestructive, existingRoot: true, cleanup: eo.Cleanup})
}

// prepareExistingRoot mounts the host's root at the default ROOT unless
// something is mounted there already (say, podman's -v /:/target).
func (r *run) prepareExistingRoot(root string) error {
	if root != DefaultExistingRoot {
		return nil
	}
	mounted, err := mount.IsMountpoint(root)
	if err != nil || mounted {
		return err
	}
	return r.bindHostRoot(root)
}

// bindHostRoot mounts the host's root filesystem, with everything mounted
// below it, at dir, creating dir if needed. The mount lives in bootlace's
// private mount namespace only; the cleanup stack removes it and a dir it
// created.
func (r *run) bindHostRoot(dir string) error {
	if !exists(dir) {
		if err := os.Mkdir(dir, 0o755); err != nil {
			return errs.New(errs.Target, "creating mount point", dir, err, "")
		}
		r.stack.Push("mount point "+dir, func() error { return os.Remove(dir) })
	}
	fd, err := openHostTree()
	if err != nil {
		return errs.New(errs.Target, "cloning the host's root mount for", dir, err,
			"in a container, run it with --pid=host and --privileged, or mount the host's root at ROOT yourself (-v /:/target)")
	}
	defer unix.Close(fd)
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return errs.New(errs.Target, "mounting the host's root at", dir, err, "")
	}
	r.stack.Push("host root mount "+dir, func() error { return unix.Unmount(dir, unix.MNT_DETACH) })
	r.em("resolve").Info("mounted the host's root filesystem at " + dir)
	return nil
}

// openHostTree clones the host's root mount tree (pid 1's root), detached,
// for move_mount. Inside a container started with --pid=host, pid 1's root
// is in another mount namespace, where the clone must be made: a locked
// thread joins that namespace, clones, and is then discarded with its
// goroutine, so no other goroutine ever runs there.
func openHostTree() (int, error) {
	const flags = unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC | unix.AT_RECURSIVE
	var ours, host unix.Stat_t
	if err := unix.Stat("/", &ours); err != nil {
		return -1, err
	}
	// Without access to pid 1's root (hidepid, a pid 1 that is not
	// dumpable) ours is the only root there is to go by.
	err := unix.Stat(hostRootPath, &host)
	if err != nil || ours.Dev == host.Dev && ours.Ino == host.Ino {
		return unix.OpenTree(unix.AT_FDCWD, "/", flags)
	}
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// Never unlocked: the thread ends with the goroutine.
		runtime.LockOSThread()
		fd, err := func() (int, error) {
			// Joining a mount namespace needs a thread-private fs context.
			if err := unix.Unshare(unix.CLONE_FS); err != nil {
				return -1, fmt.Errorf("unsharing the fs context: %w", err)
			}
			ns, err := unix.Open("/proc/1/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return -1, fmt.Errorf("opening pid 1's mount namespace: %w", err)
			}
			defer unix.Close(ns)
			if err := unix.Setns(ns, unix.CLONE_NEWNS); err != nil {
				return -1, fmt.Errorf("joining pid 1's mount namespace: %w", err)
			}
			return unix.OpenTree(unix.AT_FDCWD, "/", flags)
		}()
		ch <- result{fd, err}
	}()
	res := <-ch
	return res.fd, res.err
}
