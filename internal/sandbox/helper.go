package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// helperEnv marks the re-executed process as the sandbox helper.
const helperEnv = "BOOTLACE_SANDBOX_HELPER"

// Exit status of the helper when it fails before the command runs.
const setupFailed = 125

// helperSpec is what Run sends to the helper over fd 3, as JSON.
type helperSpec struct {
	Root    string
	Path    string // the command, resolved inside the image
	Args    []string
	Env     []string
	Dir     string
	Binds   []Bind
	Devices bool
}

// helperStatus is what the helper sends back over fd 4, as JSON: either a
// setup error or how the command ended.
type helperStatus struct {
	Err    string `json:",omitempty"`
	Exited bool   `json:",omitempty"`
	Code   int    `json:",omitempty"`
	Signal int    `json:",omitempty"`

	valid bool // set by the reader when a status arrived
}

// isReplaced reports the top-level image directories the sandbox does not
// take from the image but mounts fresh.
func isReplaced(name string) bool {
	switch name {
	case "proc", "sys", "dev", "run", "tmp":
		return true
	}
	return false
}

// minimalDevices are bound from the host into the private /dev.
var minimalDevices = [...]string{"null", "zero", "full", "random", "urandom", "tty"}

// Init must be called first thing in main (and in TestMain). In the process
// Run re-executes as the sandbox helper it builds the sandbox, runs the
// command and exits with its status, never returning; anywhere else it
// returns false at once.
func Init() bool {
	if os.Getenv(helperEnv) != "1" {
		return false
	}
	os.Exit(helperMain())
	return true
}

func helperMain() int {
	// Without a PID namespace of our own the marker was set by accident:
	// touching this mount namespace would change the host's mounts.
	if os.Getpid() != 1 {
		fmt.Fprintf(os.Stderr, "%s is set but this process is not PID 1 of a new PID namespace; refusing to run as the sandbox helper\n", helperEnv)
		return setupFailed
	}
	specFile := os.NewFile(3, "sandbox-spec")
	statFile := os.NewFile(4, "sandbox-status")
	// They were inherited without close-on-exec; the command must not get them.
	unix.CloseOnExec(3)
	unix.CloseOnExec(4)
	report := func(st helperStatus) { _ = json.NewEncoder(statFile).Encode(st) }
	fail := func(err error) int {
		report(helperStatus{Err: err.Error()})
		return setupFailed
	}

	var hs helperSpec
	if err := json.NewDecoder(specFile).Decode(&hs); err != nil {
		return fail(fmt.Errorf("reading the sandbox spec: %w", err))
	}
	specFile.Close()
	os.Unsetenv(helperEnv)
	unix.Umask(0o022)

	if err := setupRoot(hs); err != nil {
		return fail(err)
	}
	proc, err := os.StartProcess(hs.Path, hs.Args, &os.ProcAttr{
		Env:   hs.Env,
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
	})
	if err != nil {
		return fail(fmt.Errorf("starting %s: %w", hs.Path, err))
	}
	ws, err := reapUntil(proc.Pid)
	if err != nil {
		return fail(fmt.Errorf("waiting for %s: %w", hs.Path, err))
	}
	if ws.Signaled() {
		report(helperStatus{Exited: true, Signal: int(ws.Signal())})
		return 128 + int(ws.Signal())
	}
	report(helperStatus{Exited: true, Code: ws.ExitStatus()})
	return ws.ExitStatus()
}

// reapUntil reaps every child (as PID 1 we inherit orphans) until pid ends.
// Children still running when we return die with the PID namespace.
func reapUntil(pid int) (unix.WaitStatus, error) {
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return ws, err
		}
		if got == pid && (ws.Exited() || ws.Signaled()) {
			return ws, nil
		}
	}
}

// treeMount is a detached clone of a host mount, waiting to be attached.
type treeMount struct {
	fd  int
	dir bool
}

// cloneTree makes a detached copy of the mount at (or the bind of) p, so
// the host's own mount is never changed, not even its flags.
func cloneTree(p string, recursive, readOnly, follow bool) (treeMount, error) {
	fi, err := os.Stat(p)
	if !follow {
		fi, err = os.Lstat(p)
	}
	if err != nil {
		return treeMount{}, err
	}
	flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
	if recursive {
		flags |= unix.AT_RECURSIVE
	}
	if !follow {
		flags |= unix.AT_SYMLINK_NOFOLLOW
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, p, flags)
	if err != nil {
		return treeMount{}, fmt.Errorf("cloning the mount of %s: %w", p, err)
	}
	if readOnly {
		attrFlags := uint(unix.AT_EMPTY_PATH)
		if recursive {
			attrFlags |= unix.AT_RECURSIVE
		}
		if err := unix.MountSetattr(fd, "", attrFlags, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
			unix.Close(fd)
			return treeMount{}, fmt.Errorf("making the bind of %s read-only: %w", p, err)
		}
	}
	return treeMount{fd: fd, dir: fi.IsDir()}, nil
}

// attach creates the mount point target (a directory or an empty file, to
// match the clone) and moves the clone onto it.
func (m treeMount) attach(target string) error {
	if err := makeMountpoint(target, m.dir); err != nil {
		return err
	}
	if err := unix.MoveMount(m.fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("mounting at %s: %w", target, err)
	}
	return nil
}

func makeMountpoint(target string, dir bool) error {
	if fi, err := os.Lstat(target); err == nil {
		if fi.IsDir() != dir {
			return fmt.Errorf("mount point %s: source and target must both be directories or both be files", target)
		}
		return nil
	}
	var err error
	if dir {
		err = os.Mkdir(target, 0o755)
	} else {
		var f *os.File
		if f, err = os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644); err == nil {
			err = f.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("creating mount point: %w", err)
	}
	return nil
}

func mountFresh(fstype, target string, flags uintptr, data string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("creating mount point: %w", err)
	}
	if err := unix.Mount(fstype, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mounting %s at %s: %w", fstype, target, err)
	}
	return nil
}

// setupRoot builds the sandbox's root and enters it. Everything from the
// host is cloned first, while host paths are still reachable; then a tmpfs
// receives the clones and becomes the root.
func setupRoot(hs helperSpec) (err error) {
	// Our mount namespace is a copy of the host's with the same propagation:
	// without this, mounts made here would show up on the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making mounts private: %w", err)
	}

	var clones []treeMount
	defer func() {
		for _, c := range clones {
			unix.Close(c.fd)
		}
	}()
	clone := func(p string, recursive, readOnly, follow bool) (treeMount, error) {
		m, err := cloneTree(p, recursive, readOnly, follow)
		if err == nil {
			clones = append(clones, m)
		}
		return m, err
	}

	// The image's top level: symlinks are recreated, directories and files
	// bound read-only.
	entries, err := os.ReadDir(hs.Root)
	if err != nil {
		return fmt.Errorf("reading the image root: %w", err)
	}
	links := map[string]string{}
	image := map[string]treeMount{}
	// A top-level directory that a bind replaces whole is not bound from
	// the image: stacking the bind on it would make the image's directory a
	// mount point, which the host could then not remove (ostree commit
	// --consume deletes the tree it commits, /sysroot included).
	shadowed := map[string]bool{}
	for _, b := range hs.Binds {
		if name := strings.TrimPrefix(filepath.Clean(b.Target), "/"); name != "" && !strings.Contains(name, "/") {
			shadowed[name] = true
		}
	}
	for _, e := range entries {
		name := e.Name()
		if isReplaced(name) || shadowed[name] {
			continue
		}
		p := filepath.Join(hs.Root, name)
		switch e.Type() {
		case fs.ModeSymlink:
			if links[name], err = os.Readlink(p); err != nil {
				return fmt.Errorf("reading image symlink: %w", err)
			}
		case fs.ModeDir, 0:
			if image[name], err = clone(p, true, true, false); err != nil {
				return err
			}
		}
	}
	// An ostree-style tree keeps /etc in /usr/etc; tools still need
	// /etc/passwd, ld.so.cache and friends.
	if _, hasEtc := image["etc"]; !hasEtc && links["etc"] == "" {
		usrEtc := filepath.Join(hs.Root, "usr", "etc")
		if fi, err := os.Lstat(usrEtc); err == nil && fi.IsDir() {
			if image["etc"], err = clone(usrEtc, true, true, false); err != nil {
				return err
			}
		}
	}

	sys, err := clone("/sys", true, true, true)
	if err != nil {
		return err
	}
	devs := map[string]treeMount{}
	if hs.Devices {
		if devs[""], err = clone("/dev", true, false, true); err != nil {
			return err
		}
	} else {
		for _, name := range minimalDevices {
			m, err := clone("/dev/"+name, false, false, true)
			if errors.Is(err, fs.ErrNotExist) && name == "tty" {
				continue // containers may have no /dev/tty
			}
			if err != nil {
				return err
			}
			devs[name] = m
		}
	}
	binds := make([]treeMount, len(hs.Binds))
	for i, b := range hs.Binds {
		if binds[i], err = clone(b.Source, b.Recursive, b.ReadOnly, true); err != nil {
			return fmt.Errorf("bind %s: %w", b.Source, err)
		}
	}

	// The new root needs a directory to live on until pivot_root; it hides
	// whatever is there, but only in this namespace and only after every
	// host path has been cloned.
	newRoot := ""
	for _, d := range []string{"/tmp", "/mnt", "/run", "/dev"} {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			newRoot = d
			break
		}
	}
	if newRoot == "" {
		return errors.New("no directory to mount the sandbox root on (tried /tmp, /mnt, /run, /dev)")
	}
	if err := unix.Mount("tmpfs", newRoot, "tmpfs", unix.MS_NODEV, "mode=0755"); err != nil {
		return fmt.Errorf("mounting the sandbox root tmpfs: %w", err)
	}
	in := func(p string) string { return filepath.Join(newRoot, p) }

	for name, target := range links {
		if err := os.Symlink(target, in(name)); err != nil {
			return fmt.Errorf("recreating image symlink /%s: %w", name, err)
		}
	}
	for name, m := range image {
		if err := m.attach(in(name)); err != nil {
			return fmt.Errorf("binding the image's /%s: %w", name, err)
		}
	}
	if err := mountFresh("proc", in("proc"), unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return err
	}
	if err := sys.attach(in("sys")); err != nil {
		return fmt.Errorf("binding /sys: %w", err)
	}
	if err := buildDev(in("dev"), devs); err != nil {
		return err
	}
	if err := mountFresh("tmpfs", in("run"), unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		return err
	}
	if err := mountFresh("tmpfs", in("tmp"), unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
		return err
	}

	if err := enterRoot(newRoot); err != nil {
		return err
	}

	// From here on paths are inside the sandbox, so symlinks in the image
	// resolve within it.
	if fi, err := os.Lstat("/var/tmp"); err == nil && fi.IsDir() {
		// Tools write scratch files there; the image's /var is read-only.
		if err := mountFresh("tmpfs", "/var/tmp", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
			return err
		}
	}
	for i, b := range hs.Binds {
		if err := attachBind(binds[i], b.Target); err != nil {
			return fmt.Errorf("bind %s at %s: %w", b.Source, b.Target, err)
		}
	}
	// Only /run, /tmp, /dev and rw binds stay writable.
	if err := unix.MountSetattr(unix.AT_FDCWD, "/", 0, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
		return fmt.Errorf("making the sandbox root read-only: %w", err)
	}
	if err := unix.Sethostname([]byte(Hostname)); err != nil {
		return fmt.Errorf("setting the host name: %w", err)
	}
	if err := unix.Chdir(hs.Dir); err != nil {
		return fmt.Errorf("working directory %s: %w", hs.Dir, err)
	}
	return nil
}

// buildDev makes /dev: the host's whole /dev when devs holds its clone
// under "", else a tmpfs with the given nodes, a private devpts and /dev/shm.
func buildDev(dev string, devs map[string]treeMount) error {
	if all, ok := devs[""]; ok {
		if err := all.attach(dev); err != nil {
			return fmt.Errorf("binding /dev: %w", err)
		}
		return nil
	}
	if err := mountFresh("tmpfs", dev, unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755"); err != nil {
		return err
	}
	for name, m := range devs {
		if err := m.attach(filepath.Join(dev, name)); err != nil {
			return fmt.Errorf("binding /dev/%s: %w", name, err)
		}
	}
	if err := mountFresh("devpts", filepath.Join(dev, "pts"), unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return err
	}
	if err := mountFresh("tmpfs", filepath.Join(dev, "shm"), unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
		return err
	}
	for name, target := range map[string]string{
		"ptmx": "pts/ptmx", "fd": "/proc/self/fd",
		"stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2",
	} {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return fmt.Errorf("creating /dev/%s: %w", name, err)
		}
	}
	return nil
}

// enterRoot makes newRoot the root of this mount namespace and drops every
// reference to the host's tree.
func enterRoot(newRoot string) error {
	if err := unix.Chdir(newRoot); err != nil {
		return fmt.Errorf("entering the sandbox root: %w", err)
	}
	// pivot_root(".", ".") stacks the old root on the new one; detaching
	// it leaves only the new root.
	err := unix.PivotRoot(".", ".")
	switch {
	case err == nil:
		if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
			return fmt.Errorf("detaching the host root: %w", err)
		}
	case errors.Is(err, unix.EINVAL):
		// The host root is the initramfs rootfs, which cannot be pivoted
		// away; move over it and chroot, as switch_root does.
		if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("moving the sandbox root over /: %w", err)
		}
		if err := unix.Chroot("."); err != nil {
			return fmt.Errorf("chroot into the sandbox root: %w", err)
		}
	default:
		return fmt.Errorf("pivot_root into the sandbox root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("entering the sandbox root: %w", err)
	}
	return nil
}

// attachBind places a bind inside the sandbox, creating its mount point on
// the sandbox's tmpfs when it does not exist.
func attachBind(m treeMount, target string) error {
	target = path.Clean(target)
	if _, err := os.Lstat(target); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(path.Dir(target), 0o755); err != nil {
			return explainMountpoint(err)
		}
	}
	// Resolve symlinks now that "/" is the sandbox root, so a link in the
	// image cannot point the bind anywhere else.
	parent, err := filepath.EvalSymlinks(path.Dir(target))
	if err != nil {
		return err
	}
	dst := filepath.Join(parent, path.Base(target))
	if fi, err := os.Lstat(dst); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		if dst, err = filepath.EvalSymlinks(dst); err != nil {
			return err
		}
	}
	if err := m.attach(dst); err != nil {
		return explainMountpoint(err)
	}
	return nil
}

func explainMountpoint(err error) error {
	if errors.Is(err, syscall.EROFS) {
		return fmt.Errorf("%w (the mount point would have to be created in a read-only directory of the image; bind onto a path that exists in the image or lies under /, /run or /tmp)", err)
	}
	return err
}
