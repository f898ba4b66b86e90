package install

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/bootlace/bootlace/internal/blockdev"
	"github.com/bootlace/bootlace/internal/bootloader/grub"
	"github.com/bootlace/bootlace/internal/esp"
	"github.com/bootlace/bootlace/internal/event"
	"github.com/bootlace/bootlace/internal/mount"
	"github.com/bootlace/bootlace/internal/sandbox"
	"golang.org/x/sys/unix"
)

// sandboxRunner runs GRUB's tools from the deployment, never the host.
type sandboxRunner struct{ root string }

func (s sandboxRunner) Run(ctx context.Context, outDir string, argv []string) error {
	return sandbox.Run(ctx, sandbox.Spec{Root: s.root, Args: argv,
		Binds: []sandbox.Bind{{Source: outDir, Target: grub.OutMount}}})
}

// installBootloader writes GRUB: grub.cfg on /boot generated from ostree's
// BLS entries, an EFI image at the ESP's removable path, and BIOS boot code
// in the MBR and BIOS boot partition, all built by the image's grub-mkimage.
func (r *run) installBootloader(ctx context.Context, em event.Emitter, t *target, d *deployment, bl string) error {
	r.report.Bootloader = bl
	if bl == "none" {
		em.Info("--bootloader none: no boot loader installed")
		return nil
	}
	if bl != "grub" {
		return fmt.Errorf("bootloader %q is not supported (use grub or none)", bl)
	}
	bootDir := filepath.Join(t.physRoot, "boot")
	entries, err := grub.ReadEntries(bootDir)
	if err != nil {
		return err
	}
	bootUUID, bootFS := t.bootUUID, t.bootFSType
	if !t.bootSeparate {
		bootUUID, bootFS = t.rootUUID, t.rootFSType
	}
	cfg, err := grub.Config(entries, grub.ConfigOptions{BootUUID: bootUUID, BootIsSeparate: t.bootSeparate})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(bootDir, "grub"), 0o755); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(bootDir, "grub"), "grub.cfg", cfg, 0o644); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Join(t.physRoot, workDirName), "grub-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	opts := grub.ImageOptions{Root: d.dir, BootUUID: bootUUID, BootIsSeparate: t.bootSeparate, BootFSType: bootFS, TempDir: tmp}
	runner := sandboxRunner{root: d.dir}

	disk := t.device
	espDev := t.espDevice
	if disk == "" {
		disk, espDev = findDisk(t.physRoot)
	}
	if espDev != "" {
		efi, err := grub.BuildEFI(ctx, runner, opts)
		if err != nil {
			return err
		}
		mnt, err := mountPointOf(espDev)
		if err != nil {
			return err
		}
		if err := writeESP(em, espDev, mnt, t.replace == ReplaceAlongside, efi); err != nil {
			return err
		}
	} else {
		r.warn("bootloader", "no EFI system partition found on the target's disk: UEFI boot code not installed")
	}
	if disk != "" {
		start, n, err := grub.FindBIOSBoot(disk)
		if err != nil || n == 0 {
			r.warn("bootloader", fmt.Sprintf("no BIOS boot partition on %s: BIOS boot code not installed", disk))
			return nil
		}
		em.Info("writing BIOS boot code to " + disk)
		imgs, err := grub.BuildBIOSCore(ctx, runner, opts)
		if err != nil {
			return err
		}
		if err := grub.InstallBIOS(disk, imgs.Boot, imgs.Core, start, n); err != nil {
			return err
		}
	}
	return nil
}

// findDisk finds the whole disk under a mounted root and the ESP on it, for
// to-filesystem targets. Either result may be empty.
func findDisk(phys string) (disk, espDev string) {
	src, err := mountSource(phys)
	if err != nil || !strings.HasPrefix(src, "/dev/") {
		return "", ""
	}
	// /sys/class/block/<part> links into .../<disk>/<part> for partitions.
	name := filepath.Base(src)
	if _, err := os.Stat(filepath.Join("/sys/class/block", name, "partition")); err != nil {
		return "", ""
	}
	real, err := filepath.EvalSymlinks(filepath.Join("/sys/class/block", name))
	if err != nil {
		return "", ""
	}
	disk = "/dev/" + filepath.Base(filepath.Dir(real))
	layout, err := blockdev.ReadGPT(disk)
	if err != nil {
		return disk, ""
	}
	for _, p := range layout.Partitions {
		if p.Type == blockdev.TypeESP {
			return disk, blockdev.PartitionPath(disk, p.Number)
		}
	}
	return disk, ""
}

// writeESP puts the EFI image at the ESP's removable path. With clear (an
// install alongside an existing system, as bootc does) the ESP is emptied
// first, so no old boot loader is left for the firmware to start. An ESP
// the host has mounted (an existing system's /boot/efi) is written through
// that mount (mnt), never underneath the kernel's FAT driver; otherwise
// (mnt "") the volume is written directly.
func writeESP(em event.Emitter, espDev, mnt string, clear bool, efi []byte) error {
	if mnt != "" {
		if clear {
			em.Info("emptying the ESP mounted at " + mnt)
			if err := emptyDir(mnt, nil, func(string) error { return nil }); err != nil {
				return fmt.Errorf("emptying the ESP at %s: %w", mnt, err)
			}
		}
		dir := filepath.Join(mnt, "EFI", "BOOT")
		em.Info("writing EFI/BOOT/BOOTX64.EFI to the ESP mounted at " + mnt)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("writing the ESP at %s: %w", mnt, err)
		}
		return writeFileAtomic(dir, "BOOTX64.EFI", efi, 0o644)
	}
	if clear {
		em.Info("emptying the ESP " + espDev)
		if err := esp.Clear(espDev); err != nil {
			return err
		}
	}
	em.Info("writing EFI/BOOT/BOOTX64.EFI to " + espDev)
	if err := esp.WriteFiles(espDev, []esp.File{{Path: "EFI/BOOT/BOOTX64.EFI", Data: efi}}); err != nil {
		return fmt.Errorf("writing the ESP %s: %w", espDev, err)
	}
	return nil
}

// mountPointOf returns where the block device dev is mounted (the mount of
// its filesystem's root), or "" when it is not mounted.
func mountPointOf(dev string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return "", fmt.Errorf("checking %s: %w", dev, err)
	}
	tab, err := mount.Table("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	return mountPointIn(tab, unix.Major(st.Rdev), unix.Minor(st.Rdev)), nil
}

func mountPointIn(tab []mount.Info, major, minor uint32) string {
	for _, m := range tab {
		if m.Major == major && m.Minor == minor && m.Root == "/" {
			return m.Target
		}
	}
	return ""
}
