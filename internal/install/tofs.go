package install

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/event"
	"github.com/bootlace/bootlace/internal/fetch"
	"github.com/bootlace/bootlace/internal/fsinfo"
	"github.com/bootlace/bootlace/internal/kargs"
	"github.com/bootlace/bootlace/internal/mount"
	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// ToFilesystem installs onto a mounted filesystem (the physical root), with
// an optional separate /boot mounted below it.
func ToFilesystem(ctx context.Context, opts Options, fo FSOptions) (_ *Report, retErr error) {
	r := newRun("to-filesystem", opts)
	defer func() { retErr = errors.Join(retErr, r.stack.Unwind()) }()
	return r.toFilesystem(ctx, fo)
}

// toFilesystem is to-filesystem and, with fo.existingRoot, to-existing-root.
func (r *run) toFilesystem(ctx context.Context, fo FSOptions) (*Report, error) {
	var t *target
	var src *fetch.Source
	if err := r.phase(ctx, "resolve", func(em event.Emitter) error {
		if fo.existingRoot {
			if err := r.prepareExistingRoot(fo.Root); err != nil {
				return err
			}
		}
		var err error
		t, err = inspectMountedRoot(fo, r.opts.DryRun)
		if err != nil {
			return err
		}
		if src, err = r.openSource(ctx, t.physRoot); err != nil {
			return err
		}
		// The booted root is about to change: say so and give the user
		// time to interrupt, after the image proved installable and before
		// anything is written. A dry run writes nothing and does not wait.
		if t.bootedRoot && !fo.AcknowledgeDestructive && !r.opts.DryRun {
			r.warn("resolve", bootedRootWarning(t.physRoot, DestructiveDelay))
			if err := countdown(ctx, em, DestructiveDelay, 5*time.Second); err != nil {
				src.Close()
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	defer src.Close()
	if t.installed {
		// A re-run after a completed install (say, killed in finalize) only
		// finalizes again; anything else on the target is refused.
		if err := r.alreadyInstalled(t, src); err != nil {
			return nil, err
		}
		if !t.skipFinalize && !r.opts.DryRun {
			if err := r.phase(ctx, "finalize", func(em event.Emitter) error { return finalize(t, false) }); err != nil {
				return nil, err
			}
		}
		return r.report, nil
	}
	if r.opts.DryRun {
		dir, err := os.MkdirTemp(r.opts.WorkDir, "bootlace-config-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		kernels, err := extractFiltered(ctx, src, dir, configOnly)
		if err != nil {
			return nil, err
		}
		kver, err := checkKernel(kernels, src.Image.Source.String())
		if err != nil {
			return nil, err
		}
		return r.dryRun(ctx, dir, src, kver, t)
	}
	// An interrupted run already wiped before it started its journal.
	if t.replace == ReplaceWipe && !resumable(t.physRoot) {
		if err := r.phase(ctx, "storage", func(em event.Emitter) error {
			em.Info("wiping the existing contents of " + t.physRoot + " and its /boot")
			if err := wipe(t.physRoot); err != nil {
				return err
			}
			return os.MkdirAll(filepath.Join(t.physRoot, "boot"), 0o755)
		}); err != nil {
			return nil, err
		}
	}
	if err := r.installOnto(ctx, t, src); err != nil {
		return nil, err
	}
	if t.cleanup {
		if err := r.writeCleanupStamp(t); err != nil {
			return nil, err
		}
	}
	if !t.skipFinalize {
		if err := r.phase(ctx, "finalize", func(em event.Emitter) error { return finalize(t, false) }); err != nil {
			return nil, err
		}
	}
	return r.report, nil
}

// writeCleanupStamp leaves bootc's request to remove the old system on
// first boot in the old root's /etc. The new deployment's bootc acts on it;
// an image without bootc's cleanup service leaves the old system in place,
// which the user is told.
func (r *run) writeCleanupStamp(t *target) error {
	p := filepath.Join(t.physRoot, cleanupStamp)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return errs.New(errs.Target, "creating", filepath.Dir(p), err, "")
	}
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		return errs.New(errs.Target, "writing", p, err, "")
	}
	if !exists(filepath.Join(t.physRoot, r.report.Deployment, cleanupService)) {
		r.warn("deploy", "--cleanup: the image has no "+cleanupService+" (bootc's); the old system's files stay in /sysroot after reboot")
	}
	return nil
}

// openSource opens the image and checks it is installable here.
func (r *run) openSource(ctx context.Context, physRoot string) (*fetch.Source, error) {
	cache, err := scratchDir(r.opts.WorkDir)
	if err != nil {
		return nil, err
	}
	r.stack.Push("scratch directory", func() error { return os.RemoveAll(cache) })
	r.scratch = cache
	fo := r.opts.Fetch
	fo.Events = r.sink
	src, err := fetch.Open(ctx, r.opts.Source, cache, fo)
	if err != nil {
		return nil, err
	}
	if err := checkDetected(src.Image, r.opts.Detected); err != nil {
		src.Close()
		return nil, err
	}
	if err := checkImageConfig(src.Image); err != nil {
		src.Close()
		return nil, err
	}
	return src, nil
}

// checkDetected verifies that the image read from the storage is the one
// the container engine started: its config hashes to the engine's image ID.
// The manifest lists that config digest and every layer is then checked
// against the config's diff IDs, so the whole image is pinned to the ID.
func checkDetected(im *fetch.Image, d *SourceDetection) error {
	if d == nil {
		return nil
	}
	got := digest.FromBytes(im.ConfigJSON)
	if got.Encoded() != d.ImageID {
		return errs.New(errs.Fetch, "verifying the container's image in", d.Storage,
			fmt.Errorf("its config hashes to %s, but the container runs image ID %s", got, d.ImageID),
			"the storage changed under the running container; start the container again, or pass --source-imgref")
	}
	return nil
}

func mountSource(dir string) (string, error) {
	m, err := mount.Find(dir)
	if err != nil || m == nil {
		return "", err
	}
	return m.Source, nil
}

// inspectMountedRoot checks a to-filesystem target and derives the root
// setup: UUIDs, kernel arguments and the /boot mount spec.
func inspectMountedRoot(fo FSOptions, dryRun bool) (*target, error) {
	// The sandbox and ostree need absolute paths; users type relative ones.
	root, err := filepath.Abs(fo.Root)
	if err != nil {
		return nil, errs.New(errs.Usage, "resolving target path", fo.Root, err, "")
	}
	fi, err := os.Stat(root)
	if err != nil || !fi.IsDir() {
		return nil, errs.New(errs.Target, "checking target", root, errors.New("not a directory"), "pass the mount point of the target's root filesystem")
	}
	m, err := mount.Find(root)
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, errs.New(errs.Target, "checking target", root, errors.New("not a mount point"), "mount the target's root filesystem there first")
	}
	booted, err := isBootedRoot(root)
	if err != nil {
		return nil, errs.New(errs.Target, "checking target", root, err, "")
	}
	// An interrupted bootlace install (its journal is there) is resumed
	// rather than refused; the phases decide what to reuse. A wipe
	// replaces a finished install too.
	resume := resumable(root)
	installed := !resume && fo.Replace != ReplaceWipe && exists(root+"/.bootc-aleph.json")
	switch fo.Replace {
	case "":
		if err := checkEmptyRoot(root, resume || installed); err != nil {
			return nil, err
		}
	case ReplaceWipe:
		if err := checkWipe(root, booted); err != nil {
			return nil, err
		}
	case ReplaceAlongside:
		if !resume && !installed {
			if err := checkNotOstree(root); err != nil {
				return nil, err
			}
		}
	default:
		return nil, errs.New(errs.Usage, "parsing --replace", fo.Replace, errors.New("unknown replace mode"), "use wipe or alongside")
	}
	switch m.FSType {
	case "ext4", "xfs", "btrfs":
	default:
		return nil, errs.New(errs.Target, "checking target", root, fmt.Errorf("filesystem type %s is not supported", m.FSType), "use ext4, xfs or btrfs for the root filesystem")
	}
	t := &target{physRoot: root, rootFSType: m.FSType, installed: installed, replace: fo.Replace,
		bootedRoot: booted, cleanup: fo.cleanup,
		// The booted root stays in use, so alongside never finalizes (bootc).
		skipFinalize: fo.SkipFinalize || fo.Replace == ReplaceAlongside}
	info, err := fsinfo.Probe(m.Source)
	if err != nil {
		// The device may be out of reach (a container without the host's
		// /dev); the kernel knows the UUID of what it mounted.
		uuid, uerr := fsinfo.MountedUUID(root)
		if uerr != nil {
			return nil, errs.New(errs.Target, "reading filesystem UUID of", m.Source, errors.Join(err, uerr), "pass --root-mount-spec")
		}
		info = fsinfo.Info{Type: m.FSType, UUID: uuid}
	}
	t.rootUUID, t.rootVerity = info.UUID, info.Verity

	var cmdline []string
	if fo.existingRoot && booted {
		raw, err := os.ReadFile("/proc/cmdline")
		if err != nil {
			return nil, fmt.Errorf("reading the running kernel's command line: %w", err)
		}
		cmdline = kargs.Parse(string(raw))
	}
	t.rootKargs, t.rootKargsFrom = rootSetupKargs(fo, booted, t.rootUUID, m.FSType, m.SuperOpts, cmdline)
	t.rootKargs = append(t.rootKargs, "rw")

	bootDir := root + "/boot"
	if !dryRun {
		if err := os.MkdirAll(bootDir, 0o755); err != nil {
			return nil, errs.New(errs.Target, "creating", bootDir, err, "")
		}
	} else if !exists(bootDir) {
		bootDir = root
	}
	var rst, bst unix.Stat_t
	if err := unix.Stat(root, &rst); err != nil {
		return nil, err
	}
	if err := unix.Stat(bootDir, &bst); err != nil {
		return nil, err
	}
	if rst.Dev != bst.Dev {
		bm, err := mount.Find(bootDir)
		if err != nil || bm == nil {
			return nil, errs.New(errs.Target, "checking", bootDir, errors.New("a separate /boot must be a mount point"), "")
		}
		binfo, err := fsinfo.Probe(bm.Source)
		if err != nil {
			return nil, errs.New(errs.Target, "reading filesystem UUID of", bm.Source, err, "pass --boot-mount-spec")
		}
		t.bootSeparate, t.bootUUID, t.bootFSType = true, binfo.UUID, bm.FSType
		t.bootMountSpec = "UUID=" + binfo.UUID
	}
	if fo.BootMountSpec != nil {
		t.bootMountSpec = *fo.BootMountSpec
	}
	if t.bootMountSpec != "" {
		t.rootKargs = append(t.rootKargs, "boot="+t.bootMountSpec)
	}
	return t, nil
}

// rootSetupKargs decides root= and what goes with it (before rw and
// boot=), and says where they came from: --root-mount-spec (empty: none),
// else for to-existing-root on the booted root the running kernel's root=,
// rootflags= and rd.* (the system found its root with them: LVM, LUKS,
// RAID, network), else the filesystem's UUID, with btrfs's subvolume.
func rootSetupKargs(fo FSOptions, booted bool, uuid, fsType, superOpts string, cmdline []string) ([]string, string) {
	if fo.RootMountSpec != nil {
		if *fo.RootMountSpec == "" {
			return nil, rootKargsFromSpec
		}
		return []string{"root=" + *fo.RootMountSpec}, rootKargsFromSpec
	}
	if fo.existingRoot && booted {
		if spec, extra, ok := inheritRootKargs(cmdline); ok {
			return append([]string{"root=" + spec}, extra...), rootKargsFromCmdline
		}
	}
	out := []string{"root=UUID=" + uuid}
	if fsType == "btrfs" {
		if sv := btrfsSubvol(superOpts); sv != "" && sv != "/" {
			out = append(out, "rootflags=subvol="+sv)
		}
	}
	return out, rootKargsFromFS
}

func btrfsSubvol(opts string) string {
	for _, o := range strings.Split(opts, ",") {
		if v, ok := strings.CutPrefix(o, "subvol="); ok {
			return v
		}
	}
	return ""
}

// finalize trims, remounts read-only, and freezes/thaws the target's
// filesystems so everything is on disk before anyone detaches it; with
// unmount it also unmounts them (to-disk mounted them itself).
func finalize(t *target, unmount bool) error {
	dirs := []string{t.physRoot}
	if t.bootSeparate {
		dirs = []string{t.physRoot + "/boot", t.physRoot}
	}
	for _, d := range dirs {
		if err := finalizeFS(d); err != nil {
			return err
		}
	}
	if unmount {
		for _, d := range dirs {
			if err := mount.Unmount(d); err != nil {
				return err
			}
		}
	}
	return nil
}

func finalizeFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("finalizing %s: %w", dir, err)
	}
	defer f.Close()
	fd := int(f.Fd())
	// FITRIM: filesystems or devices without discard say EOPNOTSUPP.
	if err := fstrim(fd); err != nil && !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOTTY) {
		return fmt.Errorf("trimming %s: %w", dir, err)
	}
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("remounting %s read-only: %w", dir, err)
	}
	if err := ioctlInt(fd, fifreeze); err != nil {
		return fmt.Errorf("freezing %s: %w", dir, err)
	}
	if err := ioctlInt(fd, fithaw); err != nil {
		return fmt.Errorf("thawing %s: %w", dir, err)
	}
	return nil
}

// fitrim is FITRIM, _IOWR('X', 121, struct fstrim_range).
const fitrim = 0xC0185879

func fstrim(fd int) error {
	rng := struct{ Start, Len, MinLen uint64 }{Len: ^uint64(0)}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fitrim, uintptr(unsafe.Pointer(&rng))); e != 0 {
		return e
	}
	return nil
}

// FIFREEZE and FITHAW are _IOWR('X', 119/120, int).
const (
	fifreeze = 0xC0045877
	fithaw   = 0xC0045878
)

func ioctlInt(fd int, req uintptr) error {
	var v int32
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(&v))); e != 0 {
		return e
	}
	return nil
}

// alreadyInstalled accepts a target that holds a finished install of the
// same image (its aleph names the digest) and fills the report from it.
func (r *run) alreadyInstalled(t *target, src *fetch.Source) error {
	notEmpty := errs.New(errs.Target, "checking target", t.physRoot, errors.New("the target filesystem is not empty: it holds another installation"), "install onto an empty filesystem")
	raw, err := os.ReadFile(t.physRoot + "/.bootc-aleph.json")
	if err != nil {
		return notEmpty
	}
	var aleph struct {
		Digest string `json:"digest"`
	}
	if json.Unmarshal(raw, &aleph) != nil || aleph.Digest != src.Image.ManifestDigest.String() {
		return notEmpty
	}
	deps, _ := filepath.Glob(filepath.Join(t.physRoot, "ostree/deploy/*/deploy/*.0"))
	if len(deps) != 1 {
		return notEmpty
	}
	tref := targetRef(r.opts)
	r.report.Image = src.Image.Source.String()
	r.report.ManifestDigest = aleph.Digest
	r.report.TargetImage = tref.String()
	r.report.Origin = originFor(tref, r.opts.Fetch.EnforceSigPolicy)
	r.report.Deployment = strings.TrimPrefix(deps[0], t.physRoot)
	r.report.Stateroot = filepath.Base(filepath.Dir(filepath.Dir(deps[0])))
	r.report.Commit = strings.TrimSuffix(filepath.Base(deps[0]), ".0")
	r.report.RootUUID = t.rootUUID
	r.warn("resolve", "the target already holds this image's installation; only finalizing it again")
	return nil
}

// scratchDir makes this run's host scratch directory (containers/image's
// blob-info cache and unpacked archives) in dir, default /var/tmp, named
// after the process. A run killed with SIGKILL cannot remove its own, so
// every run first removes those whose process is gone.
func scratchDir(dir string) (string, error) {
	if dir == "" {
		dir = "/var/tmp"
	}
	stale, _ := filepath.Glob(filepath.Join(dir, "bootlace-run-*"))
	for _, p := range stale {
		var pid int
		if _, err := fmt.Sscanf(filepath.Base(p), "bootlace-run-%d-", &pid); err != nil || pid <= 0 {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			_ = os.RemoveAll(p)
		}
	}
	d, err := os.MkdirTemp(dir, fmt.Sprintf("bootlace-run-%d-", os.Getpid()))
	if err != nil {
		return "", fmt.Errorf("creating scratch directory in %s: %w", dir, err)
	}
	return d, nil
}
