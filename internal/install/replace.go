package install

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/event"
	"github.com/bootlace/bootlace/internal/kargs"
	"github.com/bootlace/bootlace/internal/mount"
)

// Replace modes for a target that already holds a system (bootc's --replace).
const (
	// ReplaceWipe removes the existing contents of root and /boot.
	ReplaceWipe = "wipe"
	// ReplaceAlongside keeps the existing root (reachable at /sysroot after
	// reboot) and clears only /boot and the ESP, so the new deployment is
	// what boots.
	ReplaceAlongside = "alongside"
)

// DestructiveDelay is how long an install onto the booted root waits, with
// a warning, before it starts changing things (bootc waits 20 s too).
const DestructiveDelay = 20 * time.Second

// Where the root setup kernel arguments (root=, rootflags=, rd.*) came from,
// as the plan reports it.
const (
	rootKargsFromFS      = "root-filesystem"
	rootKargsFromCmdline = "kernel-cmdline"
	rootKargsFromSpec    = "root-mount-spec"
)

// cleanupStamp is the file bootc's --cleanup leaves in the old root's /etc:
// on first boot bootc's generator sees it as /sysroot/etc/... and enables
// bootc-destructive-cleanup.service, which removes the old system.
const cleanupStamp = "etc/bootc-destructive-cleanup"

// cleanupService is the unit in the image that acts on cleanupStamp.
const cleanupService = "usr/lib/systemd/system/bootc-destructive-cleanup.service"

// inheritRootKargs picks what an install next to the running system keeps
// from the running kernel's command line, as bootc does: the first root=,
// the first rootflags= and every rd.* argument (the initramfs needs them
// to find the root: LVM, LUKS, RAID, network). ok is false without root=,
// in which case nothing is inherited.
func inheritRootKargs(cmdline []string) (rootSpec string, extra []string, ok bool) {
	for _, a := range cmdline {
		if v, found := strings.CutPrefix(a, "root="); found {
			rootSpec, ok = v, true
			break
		}
	}
	if !ok {
		return "", nil, false
	}
	for _, a := range cmdline {
		if kargs.Key(a) == "rootflags" {
			extra = append(extra, a)
			break
		}
	}
	for _, a := range cmdline {
		if strings.HasPrefix(kargs.Key(a), "rd.") {
			extra = append(extra, a)
		}
	}
	return rootSpec, extra, true
}

// hostRootPath is the host's root directory: pid 1's root, which differs
// from ours inside a container started with --pid=host.
const hostRootPath = "/proc/1/root"

// isBootedRoot reports whether dir is on the filesystem the running host
// booted from (the same device as pid 1's root; on a plain host that is /).
func isBootedRoot(dir string) (bool, error) {
	var a, b unix.Stat_t
	if err := unix.Stat(dir, &a); err != nil {
		return false, fmt.Errorf("checking %s: %w", dir, err)
	}
	if err := unix.Stat(hostRootPath, &b); err != nil {
		// Without access to pid 1 (hidepid), fall back to our own root.
		if err := unix.Stat("/", &b); err != nil {
			return false, fmt.Errorf("checking /: %w", err)
		}
	}
	return a.Dev == b.Dev, nil
}

// countdown warns that the booted root is about to be changed and waits
// total, reporting the time left every step; an interrupt (ctx) cancels.
func countdown(ctx context.Context, em event.Emitter, total, step time.Duration) error {
	t := time.NewTicker(step)
	defer t.Stop()
	for left := total; left > 0; {
		select {
		case <-ctx.Done():
			return interrupted(ctx.Err())
		case <-t.C:
			left -= step
			if left > 0 {
				em.Warn(fmt.Sprintf("continuing in %s; press Ctrl-C to cancel", left.Round(time.Second)))
			}
		}
	}
	return nil
}

// bootedRootWarning is the warning before an install onto the booted root.
func bootedRootWarning(root string, wait time.Duration) string {
	return fmt.Sprintf("%s is the booted host root filesystem: this install changes it (its /boot and boot loader are replaced) and cannot be undone; "+
		"continuing in %s, press Ctrl-C to cancel (--acknowledge-destructive skips this wait)", root, wait.Round(time.Second))
}

// checkNotOstree refuses to install alongside a system that is itself an
// ostree system: its repository, deployments and boot entries would be
// cleared as if they were left by an interrupted install.
func checkNotOstree(root string) error {
	for _, p := range []string{"sysroot/ostree", "ostree/repo", "ostree/deploy"} {
		if exists(filepath.Join(root, p)) {
			return errs.New(errs.Target, "checking target", root,
				fmt.Errorf("%s exists: the target is already an ostree system", p),
				"installing next to an ostree system (a new stateroot) is not supported yet; use bootc switch, or --replace wipe on a filesystem that is not booted")
		}
	}
	return nil
}

// wipeBlockers lists the mounts below root that a wipe would have to cross:
// everything except a separate /boot (which is wiped too) and the ESP at
// /boot/efi (which is left to the boot loader phase).
func wipeBlockers(root string, mounts []mount.Info) []string {
	root = strings.TrimSuffix(filepath.Clean(root), "/")
	allowed := []string{root + "/boot", root + "/boot/efi"}
	var out []string
	for _, m := range mounts {
		if !strings.HasPrefix(m.Target, root+"/") || slices.Contains(allowed, m.Target) || slices.Contains(out, m.Target) {
			continue
		}
		out = append(out, m.Target)
	}
	slices.Sort(out)
	return out
}

// checkWipe refuses a wipe that would cross into other mounts, before
// anything is removed.
func checkWipe(root string, booted bool) error {
	if booted {
		return errs.New(errs.Target, "checking target", root, errors.New("--replace wipe would delete the running system"),
			"use --replace alongside to install next to the running system")
	}
	tab, err := mount.Table("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	if b := wipeBlockers(root, tab); len(b) > 0 {
		return errs.New(errs.Target, "checking target", root,
			fmt.Errorf("other filesystems are mounted below it (%s) and --replace wipe never crosses into them", strings.Join(b, ", ")),
			"unmount them first")
	}
	return nil
}

// wipe removes the existing contents of the root filesystem and of /boot,
// never leaving their mounts. lost+found stays (fsck wants it), as do the
// boot directory itself and the ESP mounted at /boot/efi.
func wipe(root string) error {
	refuse := func(p string) error {
		return errs.New(errs.Target, "wiping", p, errors.New("a mount point: wipe does not cross into other filesystems"), "unmount it first")
	}
	if err := emptyDir(root, []string{"lost+found", "boot"}, refuse); err != nil {
		return err
	}
	boot := filepath.Join(root, "boot")
	if !exists(boot) {
		return nil
	}
	esp := filepath.Join(boot, "efi")
	return emptyDir(boot, []string{"lost+found"}, func(p string) error {
		if p == esp {
			return nil
		}
		return refuse(p)
	})
}

// cleanBootAlongside empties /boot without leaving its filesystem, as
// bootc's alongside mode does for a system that is not ostree-managed: the
// old kernels, initramfs images, GRUB configuration and boot entries go, so
// only the new deployment is left to boot. Mount points below it (the ESP
// at /boot/efi) are left alone here; the ESP is emptied by the boot loader
// phase.
func cleanBootAlongside(root string) error {
	boot := filepath.Join(root, "boot")
	if !exists(boot) {
		return nil
	}
	return emptyDir(boot, []string{"lost+found"}, func(string) error { return nil })
}

// emptyDir removes everything in dir except the top-level names in keep,
// without ever leaving dir's mount: a directory on another mount (a mount
// point, including a bind mount of the same filesystem) is handed to
// onMount, which returns nil to leave it or an error to stop. Symlinks are
// removed, never followed. Directories ostree made immutable are made
// mutable first.
func emptyDir(dir string, keep []string, onMount func(path string) error) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", dir, err)
	}
	defer unix.Close(fd)
	mnt, err := mountIDOf(fd)
	if err != nil {
		return fmt.Errorf("reading mount ID of %s: %w", dir, err)
	}
	_, err = emptyAt(fd, dir, mnt, keep, onMount)
	return err
}

// emptyAt empties the directory open at fd (path names it in errors). It
// reports whether something had to stay (a mount point below), in which
// case the caller keeps the directory too.
func emptyAt(fd int, path string, mnt uint64, keep []string, onMount func(string) error) (kept bool, err error) {
	if err := clearImmutableFd(fd); err != nil {
		return false, fmt.Errorf("making %s mutable: %w", path, err)
	}
	names, err := readDirNames(fd, path)
	if err != nil {
		return false, err
	}
	for _, name := range names {
		if slices.Contains(keep, name) {
			kept = true
			continue
		}
		p := filepath.Join(path, name)
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return kept, fmt.Errorf("checking %s: %w", p, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if err := unix.Unlinkat(fd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
				return kept, fmt.Errorf("removing %s: %w", p, err)
			}
			continue
		}
		// Decide on the opened directory, so a mount made between the
		// check and the descent cannot redirect the removal.
		sub, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return kept, fmt.Errorf("opening %s: %w", p, err)
		}
		id, err := mountIDOf(sub)
		if err != nil {
			unix.Close(sub)
			return kept, fmt.Errorf("reading mount ID of %s: %w", p, err)
		}
		if id != mnt {
			unix.Close(sub)
			if err := onMount(p); err != nil {
				return kept, err
			}
			kept = true
			continue
		}
		subKept, err := emptyAt(sub, p, mnt, nil, onMount)
		unix.Close(sub)
		if err != nil {
			return kept, err
		}
		if subKept {
			kept = true
			continue
		}
		if err := unix.Unlinkat(fd, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
			return kept, fmt.Errorf("removing %s: %w", p, err)
		}
	}
	return kept, nil
}

// mountIDOf returns the ID of the mount an open file is on.
func mountIDOf(fd int) (uint64, error) {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &stx); err != nil {
		return 0, err
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 {
		return 0, errors.New("the kernel does not report mount IDs (Linux 5.8 or later is needed)")
	}
	return stx.Mnt_id, nil
}

// readDirNames lists the directory open at fd without moving fd's offset
// for anyone else (it reads through a duplicate).
func readDirNames(fd int, path string) ([]string, error) {
	dup, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	f := os.NewFile(uintptr(dup), path)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	slices.Sort(names)
	return names, nil
}
