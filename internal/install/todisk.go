package install

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/bootlace/bootlace/internal/blockdev"
	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/esp"
	"github.com/bootlace/bootlace/internal/event"
	"github.com/bootlace/bootlace/internal/fetch"
	"github.com/bootlace/bootlace/internal/installconfig"
	"github.com/bootlace/bootlace/internal/layer"
	"github.com/bootlace/bootlace/internal/mount"
	"golang.org/x/sys/unix"
)

// ToDisk partitions a whole disk (or a disk image through a loop device),
// makes its filesystems with the image's mkfs and installs onto them.
func ToDisk(ctx context.Context, opts Options, do DiskOptions) (_ *Report, retErr error) {
	r := newRun("to-disk", opts)
	defer func() { retErr = errors.Join(retErr, r.stack.Unwind()) }()
	if do.ViaLoopback {
		r.opts.GenericImage = true
	}
	var (
		src   *fetch.Source
		tools string
		dev   string
		disk  *blockdev.Disk
		parts []blockdev.Partition
		kver  string
		claim *os.File
	)
	if err := r.phase(ctx, "resolve", func(em event.Emitter) error {
		var err error
		dev, err = r.attachDevice(ctx, do)
		if err != nil {
			return err
		}
		disk, err = blockdev.Inspect(dev)
		if err != nil {
			return errs.New(errs.Target, "inspecting", dev, err, "")
		}
		if err := blockdev.CheckUsable(disk, do.Wipe); err != nil {
			return err
		}
		// Claim the disk while bootlace reads the image and decides the
		// layout: nothing else may mount it or open it exclusively meanwhile.
		if claim, err = blockdev.OpenExclusive(dev); err != nil {
			return err
		}
		r.stack.Push("exclusive claim on "+dev, func() error { return releaseClaim(&claim) })
		// The layout needs only the disk: a disk too small fails at once.
		if parts, err = blockdev.PlanBootcLayout(disk.Size, disk.SectorSize, blockdev.LayoutOptions{RootSize: do.RootSize}); err != nil {
			return err
		}
		if src, err = r.openSource(ctx, ""); err != nil {
			return err
		}
		r.stack.Push("image source", src.Close)
		// The image's tools and layout configuration, before the disk is
		// touched: a broken image never costs the user a disk.
		tools, kver, err = r.bootstrapTools(ctx, src)
		return err
	}); err != nil {
		return nil, err
	}

	fsType, err := r.rootFSType(tools, do)
	if err != nil {
		return nil, err
	}
	t := &target{device: dev, rootFSType: fsType, bootFSType: fsType, bootSeparate: true, rootVerity: fsType == "ext4"}
	r.layout, r.wipe, r.disk, r.diskName = planPartitions(parts, fsType), do.Wipe, disk, do.Device
	if r.opts.DryRun {
		// The UUIDs of a dry run are examples: a real run makes new ones.
		t.rootUUID, t.bootUUID = blockdev.NewUUID(), blockdev.NewUUID()
		t.bootMountSpec = "UUID=" + t.bootUUID
		t.rootKargs = []string{"root=UUID=" + t.rootUUID, "rw", "boot=UUID=" + t.bootUUID}
		return r.dryRun(ctx, tools, src, kver, t)
	}
	wroteTable := false
	defer func() {
		// A disk whose install failed must never boot half-written.
		if retErr != nil && wroteTable {
			if err := blockdev.WipeTable(dev); err != nil {
				retErr = errors.Join(retErr, err)
			}
		}
	}()
	if err := r.phase(ctx, "storage", func(em event.Emitter) error {
		// Wipe and the table writer claim the disk themselves (and mkfs
		// claims the partitions), so the claim held since resolve ends here.
		if err := releaseClaim(&claim); err != nil {
			return err
		}
		if disk.Table != "" || disk.Signature != "" || len(disk.Partitions) > 0 {
			em.Info("wiping " + dev)
			if err := blockdev.Wipe(dev); err != nil {
				return errs.New(errs.Target, "wiping", dev, err, "")
			}
		}
		diskGUID, err := blockdev.NewGUID()
		if err != nil {
			return err
		}
		wroteTable = true
		if err := blockdev.WriteGPT(dev, parts, diskGUID); err != nil {
			return errs.New(errs.Target, "writing partition table to", dev, err, "")
		}
		if err := blockdev.AddPartitionsContext(ctx, dev, parts); err != nil {
			return errs.New(errs.Target, "adding partitions of", dev, err, "")
		}
		r.stack.Push("partitions of "+dev, func() error { return blockdev.RemovePartitions(dev) })
		var rootPart, bootPart string
		for _, p := range parts {
			path := blockdev.PartitionPath(dev, p.Number)
			switch p.Name {
			case blockdev.NameESP:
				em.Info("formatting the ESP " + path + " (FAT32, written by bootlace)")
				uuid, err := esp.Format(path, p.Size, "EFI-SYSTEM")
				if err != nil {
					return errs.New(errs.Target, "formatting ESP", path, err, "")
				}
				t.espDevice = path
				r.report.ESPUUID = uuid
			case blockdev.NameBoot:
				bootPart = path
			case blockdev.NameRoot:
				rootPart = path
			}
		}
		t.rootUUID, t.bootUUID = blockdev.NewUUID(), blockdev.NewUUID()
		if err := mkfs(ctx, tools, fsType, rootPart, t.rootUUID, "root"); err != nil {
			return err
		}
		if err := mkfs(ctx, tools, fsType, bootPart, t.bootUUID, "boot"); err != nil {
			return err
		}
		mnt, err := os.MkdirTemp(r.opts.WorkDir, "bootlace-target-")
		if err != nil {
			return err
		}
		r.stack.Push("target mount point", func() error { return os.Remove(mnt) })
		if err := mount.Mount(rootPart, mnt, fsType, 0, ""); err != nil {
			return errs.New(errs.Target, "mounting root filesystem", rootPart, err, "")
		}
		r.stack.Push("root mount", func() error { return mount.Unmount(mnt) })
		if err := os.MkdirAll(filepath.Join(mnt, "boot"), 0o755); err != nil {
			return err
		}
		if err := mount.Mount(bootPart, filepath.Join(mnt, "boot"), fsType, 0, ""); err != nil {
			return errs.New(errs.Target, "mounting boot filesystem", bootPart, err, "")
		}
		r.stack.Push("boot mount", func() error { return mount.Unmount(filepath.Join(mnt, "boot")) })
		if err := os.MkdirAll(filepath.Join(mnt, "boot/efi"), 0o755); err != nil {
			return err
		}
		t.physRoot = mnt
		t.bootMountSpec = "UUID=" + t.bootUUID
		t.rootKargs = []string{"root=UUID=" + t.rootUUID, "rw", "boot=UUID=" + t.bootUUID}
		return nil
	}); err != nil {
		return nil, err
	}
	r.report.Device = dev
	if err := r.installOnto(ctx, t, src); err != nil {
		return nil, err
	}
	if err := r.phase(ctx, "finalize", func(em event.Emitter) error { return finalize(t, false) }); err != nil {
		return nil, err
	}
	if do.ViaLoopback {
		r.report.Device = do.Device
	}
	return r.report, nil
}

// attachDevice returns the block device to install to, attaching a loop
// device for --via-loopback (always detached by the cleanup stack).
func (r *run) attachDevice(ctx context.Context, do DiskOptions) (string, error) {
	fi, err := os.Stat(do.Device)
	if err != nil {
		return "", errs.New(errs.Target, "opening", do.Device, err, "pass an existing block device, or a disk image file with --via-loopback")
	}
	if do.ViaLoopback {
		if !fi.Mode().IsRegular() {
			return "", errs.New(errs.Usage, "checking", do.Device, errors.New("--via-loopback needs a regular file"), "create one with truncate -s 10G disk.raw")
		}
		loop, err := blockdev.AttachLoop(ctx, do.Device)
		if err != nil {
			return "", errs.New(errs.Target, "attaching loop device for", do.Device, err, "")
		}
		r.stack.Push("loop device "+loop.Path(), loop.Detach)
		return loop.Path(), nil
	}
	if fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
		return "", errs.New(errs.Usage, "checking", do.Device, errors.New("not a block device"), "pass a disk such as /dev/vdb, or a disk image file with --via-loopback")
	}
	return do.Device, nil
}

// bootstrapTools streams the image's mkfs tools and layout configuration
// into a private tmpfs (see bootstrap.go) and checks the kernel is there.
func (r *run) bootstrapTools(ctx context.Context, src *fetch.Source) (dir, kver string, err error) {
	dir, err = os.MkdirTemp(r.opts.WorkDir, "bootlace-tools-")
	if err != nil {
		return "", "", err
	}
	r.stack.Push("tools directory", func() error { return os.Remove(dir) })
	if err := mount.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=2g"); err != nil {
		return "", "", err
	}
	r.stack.Push("tools tmpfs", func() error { return mount.Unmount(dir) })
	kernels, err := extractFiltered(ctx, src, dir, bootstrapKeep)
	if err != nil {
		return "", "", err
	}
	if kver, err = checkKernel(kernels, src.Image.Source.String()); err != nil {
		return "", "", err
	}
	// Read the image's configuration now: a bad one must fail before the
	// disk is touched.
	if _, err := readImageFacts(dir, src.Image, kver); err != nil {
		return "", "", err
	}
	return dir, kver, nil
}

// extractFiltered streams every layer from the source through keep into
// dir, verifying digests and diff IDs, and returns the kernels seen.
func extractFiltered(ctx context.Context, src *fetch.Source, dir string, keep func(string) bool) ([]string, error) {
	ap, err := layer.NewApplier(dir, layer.Options{Ostree: true})
	if err != nil {
		return nil, err
	}
	defer ap.Close()
	kernels := map[string]bool{}
	for _, l := range src.Image.Layers {
		rc, err := src.Stream(ctx, l)
		if err != nil {
			return nil, err
		}
		err = func() error {
			defer rc.Close()
			dr, err := layer.Decompress(rc, l.MediaType)
			if err != nil {
				return errs.New(errs.Image, "decompressing layer", l.Digest.String(), err, "")
			}
			defer dr.Close()
			ft := filterTar(ctx, dr, keep, kernels)
			defer ft.Close()
			if _, err := ap.Apply(ctx, ft); err != nil {
				return err
			}
			return nil
		}()
		if err != nil {
			return nil, fmt.Errorf("reading the image's configuration from layer %s: %w", l.Digest, err)
		}
	}
	var out []string
	for k := range kernels {
		out = append(out, k)
	}
	return out, nil
}

func (r *run) rootFSType(tools string, do DiskOptions) (string, error) {
	if do.Filesystem != "" {
		return do.Filesystem, nil
	}
	cfg, _, err := installconfig.Load(tools, runtime.GOARCH)
	if err != nil {
		return "", err
	}
	if fs := cfg.RootFS(); fs != "" {
		return fs, nil
	}
	return "", errs.New(errs.Usage, "choosing the root filesystem", "", errors.New("no --filesystem given and the image's install config names none"), "pass --filesystem ext4, xfs or btrfs")
}

// mkfs makes a filesystem with the image's own tool, as bootc lays it out.
func mkfs(ctx context.Context, tools, fsType, dev, uuid, label string) error {
	var args []string
	switch fsType {
	case "ext4":
		args = []string{"mkfs.ext4", "-q", "-F", "-U", uuid, "-L", label}
		if label == "root" {
			args = append(args, "-O", "verity")
		}
	case "xfs":
		args = []string{"mkfs.xfs", "-q", "-f", "-m", "uuid=" + uuid, "-L", label}
	case "btrfs":
		args = []string{"mkfs.btrfs", "-q", "-f", "-U", uuid, "-L", label}
	default:
		return errs.New(errs.Usage, "making filesystem", dev, fmt.Errorf("unsupported filesystem %q", fsType), "use ext4, xfs or btrfs")
	}
	_, err := imageTool(ctx, tools, "", true, append(args, dev)...)
	return err
}

// planPartitions describes the layout for the plan.
func planPartitions(parts []blockdev.Partition, fsType string) []PlanPartition {
	var out []PlanPartition
	for _, p := range parts {
		pp := PlanPartition{Number: p.Number, Name: p.Name, Type: p.Type.String(), Start: p.Start, Size: p.Size}
		switch p.Name {
		case blockdev.NameESP:
			pp.Filesystem = "vfat"
		case blockdev.NameBoot, blockdev.NameRoot:
			pp.Filesystem = fsType
		}
		out = append(out, pp)
	}
	return out
}

func releaseClaim(f **os.File) error {
	if *f == nil {
		return nil
	}
	err := (*f).Close()
	*f = nil
	return err
}
