package grub

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"

	"github.com/bootlace/bootlace/internal/errs"
)

// OutMount is where a Runner makes the scratch directory visible inside
// the image root; grub-mkimage reads its early config from there and
// writes its output there.
const OutMount = "/run/bootlace-out"

// Runner runs a command from the image tree.
type Runner interface {
	// Run runs argv with the image (deployment) tree as root; paths in
	// argv are paths inside that root. outDir is a host directory that
	// must be visible read-write at OutMount inside the root.
	Run(ctx context.Context, outDir string, argv []string) error
}

// ImageOptions says where the payload is and where /boot is.
type ImageOptions struct {
	// Root is the host path of the image tree that holds the GRUB payload,
	// normally the deployment; the Runner must run commands in this tree.
	Root string
	// BootUUID is the UUID of the filesystem holding /boot/grub/grub.cfg.
	BootUUID string
	// BootIsSeparate is true when /boot is its own filesystem, so the
	// GRUB directory is /grub on it rather than /boot/grub.
	BootIsSeparate bool
	// BootFSType is the type of that filesystem (ext4, ext3, ext2, xfs,
	// btrfs, vfat); its GRUB driver must be in the payload. Empty means
	// "embed whichever of ext2, xfs and btrfs the payload has".
	BootFSType string
	// TempDir is the host directory for scratch files; empty means
	// os.TempDir().
	TempDir string
}

const (
	efiModDir  = "/usr/lib/grub/x86_64-efi"
	biosModDir = "/usr/lib/grub/i386-pc"
	bootImg    = biosModDir + "/boot.img"

	// maxCoreSectors is setup.c's cap on the embedded core image:
	// (GRUB_KERNEL_I386_PC_LINK_ADDR limit 0x78000 - 0x9000) / 512.
	maxCoreSectors = 888
)

// mkimageCandidates are where distributions put grub-mkimage (Debian and
// Ubuntu: grub-common; Fedora: grub2-tools-minimal).
var mkimageCandidates = []string{
	"/usr/bin/grub-mkimage", "/usr/bin/grub2-mkimage",
	"/usr/sbin/grub-mkimage", "/usr/sbin/grub2-mkimage",
	"/bin/grub-mkimage", "/bin/grub2-mkimage",
}

// Modules embedded in the images. Everything grub.cfg and the early config
// use is embedded, so no module directory is installed on /boot and no
// version skew between core image and modules can arise.
var (
	commonModules = []string{
		"part_gpt", "part_msdos", "fat", "ext2", "xfs", "btrfs",
		"search", "search_fs_uuid", "search_fs_file", "search_label",
		"normal", "configfile", "linux", "boot", "echo", "test",
		"serial", "terminal", "terminfo", "all_video", "gfxterm", "gzio",
		"loadenv", "minicmd", "reboot", "halt", "sleep", "true", "cat", "ls",
	}
	efiModules  = append(slices.Clone(commonModules), "efi_gop")
	biosModules = append([]string{"biosdisk"}, commonModules...)

	// requiredModules must be present; the rest are embedded when present.
	requiredModules = []string{"part_gpt", "search", "search_fs_uuid", "normal", "linux"}
)

// fsModule maps a filesystem type to the GRUB driver that reads it.
func fsModule(fstype string) (string, error) {
	switch fstype {
	case "ext2", "ext3", "ext4":
		return "ext2", nil
	case "xfs":
		return "xfs", nil
	case "btrfs":
		return "btrfs", nil
	case "vfat", "fat":
		return "fat", nil
	}
	return "", fmt.Errorf("no GRUB driver known for /boot filesystem type %q", fstype)
}

// platform describes one GRUB target.
type platform struct {
	format  string // grub-mkimage -O
	modDir  string
	modules []string
	extra   []string // required beyond requiredModules
	pkg     string   // Debian package that ships modDir
}

var (
	efiPlatform  = platform{"x86_64-efi", efiModDir, efiModules, nil, "grub-efi-amd64-bin"}
	biosPlatform = platform{"i386-pc", biosModDir, biosModules, []string{"biosdisk"}, "grub-pc-bin"}
)

// grubDir is the directory holding grub.cfg, relative to the /boot fs.
func grubDir(separate bool) string {
	if separate {
		return "/grub"
	}
	return "/boot/grub"
}

// EarlyConfig is the config embedded in both images. It runs in GRUB's
// rescue parser (no scripting, embedded commands only): it turns on the
// serial console so failures are visible there, finds /boot by UUID and
// points the prefix at the shared /boot/grub, whose grub.cfg normal loads.
func EarlyConfig(bootUUID string, bootIsSeparate bool) ([]byte, error) {
	if err := checkUUID(bootUUID); err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, "serial --unit=0 --speed=115200\n"+
		"terminal_input serial console\n"+
		"terminal_output serial console\n"+
		"search.fs_uuid %s root\n"+
		"set prefix=($root)%s\n", bootUUID, grubDir(bootIsSeparate)), nil
}

// BuildEFI builds the removable-path EFI image (\EFI\BOOT\BOOTX64.EFI) with
// the image's grub-mkimage and x86_64-efi modules.
func BuildEFI(ctx context.Context, r Runner, opts ImageOptions) ([]byte, error) {
	return build(ctx, r, opts, efiPlatform)
}

// BIOSImages are the two pieces InstallBIOS writes.
type BIOSImages struct {
	Boot []byte // boot.img, 512 bytes, for sector 0
	Core []byte // core.img, for the BIOS boot partition
}

// BuildBIOSCore builds core.img with the image's grub-mkimage and i386-pc
// modules, and reads the image's boot.img from the same build.
func BuildBIOSCore(ctx context.Context, r Runner, opts ImageOptions) (BIOSImages, error) {
	const op = "building the GRUB BIOS core image"
	boot, err := readFileInRoot(opts.Root, bootImg, 512)
	if err != nil {
		return BIOSImages{}, errs.New(errs.Image, op, filepath.Join(opts.Root, bootImg), err,
			"the image must ship grub-pc-bin for BIOS boot")
	}
	if len(boot) != 512 {
		return BIOSImages{}, errs.New(errs.Image, op, filepath.Join(opts.Root, bootImg),
			fmt.Errorf("boot.img is %d bytes, want 512", len(boot)), "")
	}
	core, err := build(ctx, r, opts, biosPlatform)
	if err != nil {
		return BIOSImages{}, err
	}
	if n := (len(core) + 511) / 512; n > maxCoreSectors {
		return BIOSImages{}, errs.New(errs.Image, op, "",
			fmt.Errorf("core.img has %d sectors, at most %d can be embedded", n, maxCoreSectors), "")
	}
	return BIOSImages{Boot: boot, Core: core}, nil
}

func build(ctx context.Context, r Runner, opts ImageOptions, p platform) ([]byte, error) {
	op := "building the GRUB " + p.format + " image"
	hint := "the image must ship " + p.pkg + " (" + p.modDir + ") and grub-common (grub-mkimage)"
	early, err := EarlyConfig(opts.BootUUID, opts.BootIsSeparate)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	mkimage := ""
	for _, c := range mkimageCandidates {
		if existsInRoot(opts.Root, c) {
			mkimage = c
			break
		}
	}
	if mkimage == "" {
		return nil, errs.New(errs.Image, op, opts.Root, errors.New("grub-mkimage not found in the image"), hint)
	}
	present, err := listModules(opts.Root, p.modDir)
	if err != nil {
		return nil, errs.New(errs.Image, op, filepath.Join(opts.Root, p.modDir), err, hint)
	}
	modules, err := selectModules(present, p, opts.BootFSType)
	if err != nil {
		return nil, errs.New(errs.Image, op, filepath.Join(opts.Root, p.modDir), err, hint)
	}

	outDir, err := os.MkdirTemp(opts.TempDir, "bootlace-grub-")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	defer os.RemoveAll(outDir)
	if err := os.WriteFile(filepath.Join(outDir, "early.cfg"), early, 0o644); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	argv := []string{mkimage,
		"-O", p.format,
		"-d", p.modDir,
		"-p", grubDir(opts.BootIsSeparate),
		"-c", path.Join(OutMount, "early.cfg"),
		"-o", path.Join(OutMount, "out.img"),
	}
	argv = append(argv, modules...)
	if err := r.Run(ctx, outDir, argv); err != nil {
		return nil, fmt.Errorf("%s: running %s: %w", op, mkimage, err)
	}
	img, err := os.ReadFile(filepath.Join(outDir, "out.img"))
	if err != nil {
		return nil, fmt.Errorf("%s: reading grub-mkimage output: %w", op, err)
	}
	if len(img) < 512 {
		return nil, fmt.Errorf("%s: grub-mkimage wrote only %d bytes", op, len(img))
	}
	return img, nil
}

// selectModules returns p's module list restricted to what the payload
// has, failing when a module the boot path needs is missing.
func selectModules(present map[string]bool, p platform, fstype string) ([]string, error) {
	required := slices.Concat(requiredModules, p.extra)
	fsMods := []string{"ext2", "xfs", "btrfs"}
	if fstype != "" {
		m, err := fsModule(fstype)
		if err != nil {
			return nil, err
		}
		required = append(required, m)
	}
	var missing []string
	for _, m := range required {
		if !present[m] {
			missing = append(missing, m)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("GRUB modules missing: %v", missing)
	}
	if fstype == "" && !slices.ContainsFunc(fsMods, func(m string) bool { return present[m] }) {
		return nil, fmt.Errorf("no GRUB filesystem driver (%v) present", fsMods)
	}
	var out []string
	for _, m := range p.modules {
		if present[m] {
			out = append(out, m)
		}
	}
	return out, nil
}
