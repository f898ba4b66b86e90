package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/install"
	"github.com/spf13/cobra"
)

func newRoot(sess *session) *cobra.Command {
	root := &cobra.Command{
		Use:   "bootlace",
		Short: "Install bootable container images onto disks and filesystems",
		Long: `bootlace installs bootable container images (OCI images that carry a whole OS, as
built for bootc) as standard ostree deployments. It fetches the image itself, from any
containers/image transport, and runs the image's own tools for the target's work, so it
behaves the same on a plain host as inside the image's container.

Progress goes to stderr: bars on a terminal, plain lines otherwise, JSON lines with
--progress json or --progress-fd N (docs/progress.md). Exit codes: 0 success,
1 internal error, 2 usage, 3 image not installable, 4 target unusable,
5 fetch/auth/signature failure, 130 interrupted.`,
		Example: `  bootlace install to-disk --wipe --source-imgref docker://quay.io/example/os:latest /dev/vdb
  bootlace install to-disk --via-loopback --source-imgref oci-archive:os.tar disk.raw
  bootlace install print-configuration --source-imgref oci-archive:os.tar --all`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return errs.New(errs.Usage, "", "", err, "see '"+c.CommandPath()+" --help'")
	})
	inst := &cobra.Command{
		Use:   "install",
		Short: "Install an image (to-disk, to-filesystem, to-existing-root, print-configuration)",
		Long: `Install a bootable container image as an ostree deployment: onto a whole disk or a
disk image file (to-disk), onto filesystems already mounted (to-filesystem), or next to
the running system (to-existing-root). print-configuration shows what the image asks
for without installing.`,
		Example: `  bootlace install to-disk --wipe --source-imgref docker://quay.io/example/os:latest /dev/vdb
  bootlace install to-filesystem --source-imgref oci-archive:/media/os.tar /mnt
  bootlace install to-disk --dry-run --source-imgref docker://quay.io/example/os:latest /dev/vdb`,
		Args: exactArgs(0, "a verb (to-disk, to-filesystem, to-existing-root or print-configuration)"),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	inst.AddCommand(newToDisk(sess), newToFilesystem(sess), newToExistingRoot(sess), newPrintConfiguration(sess))
	root.AddCommand(inst, newMan())
	return root
}

// exactArgs is cobra.ExactArgs with a usage-classified error.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return errs.New(errs.Usage, cmd.CommandPath(), "", fmt.Errorf("expected %s, got %d arguments", what, len(args)), "see '"+cmd.CommandPath()+" --help'")
		}
		return nil
	}
}

func newToDisk(sess *session) *cobra.Command {
	c := common{sess: sess}
	var d install.DiskOptions
	var rootSize string
	cmd := &cobra.Command{
		Use:   "to-disk [flags] DEVICE",
		Short: "Partition a whole disk (or a disk image file) and install onto it",
		Long: `Partition DEVICE with GPT (BIOS boot, EFI system, /boot and root partitions), make the
filesystems with the image's own mkfs, install the image and its boot loader.
With --via-loopback, DEVICE is a disk image file.`,
		Example: `  # A disk, from a registry
  bootlace install to-disk --wipe --source-imgref docker://quay.io/example/os:latest /dev/vdb

  # A disk image for a VM, air-gapped from an OCI archive, recording the registry name for updates
  truncate -s 10G disk.raw
  bootlace install to-disk --via-loopback --source-imgref oci-archive:os.tar \
      --target-imgref quay.io/example/os:latest disk.raw

  # Inside the image's own container: the source is the container's image
  podman run --rm --privileged --pid=host -v /dev:/dev -v /var/lib/containers:/var/lib/containers \
      -v /usr/local/bin/bootlace:/usr/bin/bootlace:ro quay.io/example/os:latest \
      bootlace install to-disk --wipe /dev/vdb

  # Machine-readable progress on fd 3 and a JSON report on stdout
  bootlace install to-disk --progress-fd 3 --json --source-imgref oci:/srv/os /dev/vdb 3>progress.jsonl`,
		Args: exactArgs(1, "one DEVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := c.options(cmd)
			if err != nil {
				return err
			}
			d.Device = args[0]
			if rootSize != "" {
				n, err := parseSize(rootSize)
				if err != nil {
					return errs.New(errs.Usage, "parsing --root-size", rootSize, err, "use a size like 20G or 512M")
				}
				d.RootSize = n
			}
			switch d.Filesystem {
			case "", "ext4", "xfs", "btrfs":
			default:
				return errs.New(errs.Usage, "parsing --filesystem", d.Filesystem, fmt.Errorf("unsupported filesystem"), "use ext4, xfs or btrfs")
			}
			if d.BlockSetup != "" && d.BlockSetup != "direct" {
				return errs.New(errs.Usage, "parsing --block-setup", d.BlockSetup, fmt.Errorf("only direct is supported"), "")
			}
			rep, err := install.ToDisk(cmd.Context(), o, d)
			if err != nil {
				return err
			}
			return c.finish(cmd, o, rep)
		},
	}
	c.register(cmd)
	f := cmd.Flags()
	f.BoolVar(&d.Wipe, "wipe", false, "erase an existing partition table and filesystems on DEVICE")
	f.StringVar(&d.Filesystem, "filesystem", "", "root filesystem: ext4, xfs or btrfs (default: the image's install config)")
	f.StringVar(&rootSize, "root-size", "", "size of the root partition (default: the rest of the disk)")
	f.BoolVar(&d.ViaLoopback, "via-loopback", false, "DEVICE is a disk image file, attached through a loop device")
	f.StringVar(&d.BlockSetup, "block-setup", "direct", "block setup: direct (tpm2-luks is not implemented yet)")
	_ = cmd.RegisterFlagCompletionFunc("filesystem", cobra.FixedCompletions([]string{"ext4", "xfs", "btrfs"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("block-setup", cobra.FixedCompletions([]string{"direct"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func newToFilesystem(sess *session) *cobra.Command {
	c := common{sess: sess}
	var fo install.FSOptions
	var rootSpec, bootSpec string
	cmd := &cobra.Command{
		Use:   "to-filesystem [flags] ROOT",
		Short: "Install onto a mounted root filesystem",
		Long: `Install onto the filesystem mounted at ROOT (ext4, xfs or btrfs), with /boot either a
directory in it or a separate filesystem mounted at ROOT/boot. The ESP and BIOS boot
partition, when the disk under ROOT has them, receive the boot loader.

ROOT must be empty (lost+found, and boot/ holding only lost+found or efi, may be
there) unless --replace says what to do with its contents: wipe removes everything in
ROOT and ROOT/boot without crossing into other mounts; alongside keeps them, empties
/boot and the ESP, and skips finalizing.`,
		Example: `  # Filesystems an installer prepared (Anaconda style): root on /mnt, /boot on /mnt/boot
  mount /dev/vdb4 /mnt && mount /dev/vdb3 /mnt/boot
  bootlace install to-filesystem --source-imgref docker://quay.io/example/os:latest /mnt

  # Inside the image's own container, with the host's disk mounted at /target
  podman run --privileged --pid=host -v /target:/target -v /dev:/dev \
      -v /usr/local/bin/bootlace:/usr/bin/bootlace:ro quay.io/example/os:latest \
      bootlace install to-filesystem --source-imgref docker://quay.io/example/os:latest /target`,
		Args: exactArgs(1, "one ROOT directory"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := c.options(cmd)
			if err != nil {
				return err
			}
			fo.Root = args[0]
			if cmd.Flags().Changed("root-mount-spec") {
				fo.RootMountSpec = &rootSpec
			}
			if cmd.Flags().Changed("boot-mount-spec") {
				fo.BootMountSpec = &bootSpec
			}
			if err := checkReplace(fo.Replace); err != nil {
				return err
			}
			rep, err := install.ToFilesystem(cmd.Context(), o, fo)
			if err != nil {
				return err
			}
			return c.finish(cmd, o, rep)
		},
	}
	c.register(cmd)
	f := cmd.Flags()
	f.StringVar(&rootSpec, "root-mount-spec", "", "root= value for the kernel (default UUID=<root fs>; empty for none)")
	f.StringVar(&bootSpec, "boot-mount-spec", "", "/boot mount source (default UUID=<boot fs> when separate; empty for none)")
	f.BoolVar(&fo.SkipFinalize, "skip-finalize", false, "leave the filesystems writable and mounted (no trim, read-only remount or freeze)")
	f.StringVar(&fo.Replace, "replace", "", "ROOT is not empty: wipe (remove its contents) or alongside (keep them, clear /boot and the ESP)")
	f.BoolVar(&fo.AcknowledgeDestructive, "acknowledge-destructive", false, "do not wait 20 seconds when ROOT is the booted root filesystem")
	_ = cmd.RegisterFlagCompletionFunc("replace", cobra.FixedCompletions(replaceModes, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// parseSize reads sizes like 20G, 512M, 1T or a byte count.
func parseSize(s string) (uint64, error) {
	mult := uint64(1)
	u := strings.ToUpper(strings.TrimSuffix(strings.TrimSuffix(s, "iB"), "B"))
	if u == "" {
		return 0, fmt.Errorf("empty size")
	}
	switch u[len(u)-1] {
	case 'K':
		mult = 1 << 10
	case 'M':
		mult = 1 << 20
	case 'G':
		mult = 1 << 30
	case 'T':
		mult = 1 << 40
	}
	if mult != 1 {
		u = u[:len(u)-1]
	}
	n, err := strconv.ParseUint(u, 10, 64)
	if err != nil {
		return 0, err
	}
	return n * mult, nil
}
