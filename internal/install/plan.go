package install

import (
	"fmt"
	"runtime"
	"strings"

	"github.com/bootlace/bootlace/internal/blockdev"
	"github.com/bootlace/bootlace/internal/boundimage"
	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/fetch"
	"github.com/bootlace/bootlace/internal/installconfig"
	"github.com/bootlace/bootlace/internal/kargs"
)

// goarch is the architecture installs are for: this machine's.
const goarch = runtime.GOARCH

// PlanVersion is the version of the plan's JSON schema (docs/plan.md).
const PlanVersion = 1

// Plan is everything an install will do, computed before it does any of
// it. --dry-run prints it; the install itself follows it.
type Plan struct {
	Version     int              `json:"version"`
	Verb        string           `json:"verb"`
	Image       PlanImage        `json:"image"`
	Target      PlanTarget       `json:"target"`
	Stateroot   string           `json:"stateroot"`
	Kargs       []string         `json:"kargs"`
	Bootloader  PlanBootloader   `json:"bootloader"`
	SELinux     PlanSELinux      `json:"selinux"`
	PrepareRoot PlanPrepareRoot  `json:"prepare-root"`
	BoundImages []string         `json:"bound-images"`
	Config      []PlanConfigFile `json:"install-config-sources"`
	Tools       []PlanTool       `json:"tools"`
	// SourceDetection says how the source was found when no
	// --source-imgref was given (an install inside the image's container).
	SourceDetection *SourceDetection `json:"source-detection,omitempty"`
}

// PlanImage describes the source image and the reference recorded for updates.
type PlanImage struct {
	Source         string            `json:"source"`
	ManifestDigest string            `json:"manifest-digest"`
	Architecture   string            `json:"architecture"`
	Labels         map[string]string `json:"labels,omitempty"`
	Kernel         string            `json:"kernel"`
	Layers         []PlanLayer       `json:"layers"`
	Target         string            `json:"target-image"`
	Origin         string            `json:"origin"`
	OstreeRef      string            `json:"ostree-ref"`
}

// PlanLayer is one layer blob.
type PlanLayer struct {
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	MediaType string `json:"media-type"`
}

// PlanTarget is the disk or filesystem that receives the install.
type PlanTarget struct {
	Device        string          `json:"device,omitempty"`
	Root          string          `json:"root,omitempty"`
	Size          uint64          `json:"size,omitempty"`
	SectorSize    uint32          `json:"sector-size,omitempty"`
	Wipe          bool            `json:"wipe,omitempty"`
	Partitions    []PlanPartition `json:"partitions,omitempty"`
	RootFS        string          `json:"root-filesystem"`
	BootSeparate  bool            `json:"boot-separate"`
	RootMountSpec string          `json:"root-mount-spec"`
	BootMountSpec string          `json:"boot-mount-spec,omitempty"`
	// RootKargsFrom says where root= and its companions come from:
	// root-filesystem (its UUID), kernel-cmdline (inherited from the
	// running system) or root-mount-spec (the flag).
	RootKargsFrom string `json:"root-kargs-from"`
	// Replace is the --replace mode: wipe or alongside.
	Replace string `json:"replace,omitempty"`
	// BootedRoot marks the filesystem the running host booted from.
	BootedRoot bool `json:"booted-root,omitempty"`
	// Cleanup is to-existing-root's --cleanup.
	Cleanup bool `json:"cleanup,omitempty"`
}

// PlanPartition is one partition to-disk will create.
type PlanPartition struct {
	Number     int    `json:"number"`
	Name       string `json:"name"`
	Type       string `json:"type-guid"`
	Start      uint64 `json:"start"`
	Size       uint64 `json:"size"`
	Filesystem string `json:"filesystem,omitempty"`
}

// PlanBootloader says which boot code goes where.
type PlanBootloader struct {
	Backend string `json:"backend"`
	EFI     bool   `json:"efi"`
	BIOS    bool   `json:"bios"`
}

// PlanSELinux is the image's SELinux decision.
type PlanSELinux struct {
	ImagePolicy bool   `json:"image-policy"`
	Type        string `json:"type,omitempty"`
	Label       bool   `json:"label"`
	State       string `json:"state"`
}

// PlanPrepareRoot summarises the image's prepare-root.conf.
type PlanPrepareRoot struct {
	Path           string `json:"path,omitempty"`
	Composefs      string `json:"composefs"`
	RequiresVerity bool   `json:"requires-verity"`
}

// PlanConfigFile is one install config fragment and what became of it.
type PlanConfigFile = installconfig.Source

// PlanTool names a tool the install uses and where it comes from.
type PlanTool struct {
	Tool string `json:"tool"`
	From string `json:"from"`
}

// imageFacts is what the plan needs from the image tree.
type imageFacts struct {
	im          *fetch.Image
	kernel      string
	cfg         *installconfig.Config
	sources     []installconfig.Source
	kargsD      []string
	prepareRoot *installconfig.PrepareRoot
	selinux     installconfig.Policy
	boundImages []string
}

// readImageFacts reads the image's configuration from a tree (the staged
// image, or the configuration-only extract of a dry run).
func readImageFacts(tree string, im *fetch.Image, kernel string) (*imageFacts, error) {
	f := &imageFacts{im: im, kernel: kernel}
	var err error
	if f.cfg, f.sources, err = installconfig.Load(tree, goarch); err != nil {
		return nil, err
	}
	if f.kargsD, err = installconfig.LoadKargsD(tree, goarch); err != nil {
		return nil, err
	}
	if f.prepareRoot, err = installconfig.LoadPrepareRoot(tree); err != nil {
		return nil, err
	}
	if f.selinux, err = installconfig.SELinux(tree); err != nil {
		return nil, err
	}
	imgs, err := boundimage.List(tree)
	if err != nil {
		return nil, err
	}
	f.boundImages = boundimage.Refs(imgs)
	return f, nil
}

// computePlan is a pure function of the options, the image's facts and the
// inspected target. It refuses combinations that cannot work.
func computePlan(verb string, opts Options, f *imageFacts, t *target, layout []PlanPartition, wipe bool, disk *blockdev.Disk, diskName string) (*Plan, error) {
	tref := targetRef(opts)
	oref, err := tref.OstreeRef()
	if err != nil {
		return nil, errs.New(errs.Usage, "computing ostree ref for", tref.String(), err, "")
	}
	p := &Plan{Version: PlanVersion, Verb: verb, Config: f.sources, BoundImages: f.boundImages, SourceDetection: opts.Detected}
	p.Image = PlanImage{Source: f.im.Source.String(), ManifestDigest: f.im.ManifestDigest.String(),
		Architecture: f.im.Config.Architecture, Labels: f.im.Config.Config.Labels, Kernel: f.kernel,
		Target: tref.String(), Origin: tref.Origin(opts.Fetch.EnforceSigPolicy), OstreeRef: oref}
	for _, l := range f.im.Layers {
		p.Image.Layers = append(p.Image.Layers, PlanLayer{Digest: l.Digest.String(), Size: l.Size, MediaType: l.MediaType})
	}
	p.Target = PlanTarget{Device: t.device, Root: t.physRoot, RootFS: t.rootFSType, BootSeparate: t.bootSeparate,
		BootMountSpec: t.bootMountSpec, Partitions: layout, Wipe: wipe,
		RootKargsFrom: t.rootKargsFrom, Replace: t.replace, BootedRoot: t.bootedRoot, Cleanup: t.cleanup}
	if p.Target.RootKargsFrom == "" {
		p.Target.RootKargsFrom = rootKargsFromFS
	}
	if r := disk; r != nil {
		p.Target.Size, p.Target.SectorSize = r.Size, r.SectorSize
	}
	if diskName != "" {
		p.Target.Device = diskName
	}
	for _, k := range t.rootKargs {
		if v, ok := strings.CutPrefix(k, "root="); ok {
			p.Target.RootMountSpec = v
		}
	}

	p.Stateroot = opts.Stateroot
	if p.Stateroot == "" {
		p.Stateroot = f.cfg.Stateroot
	}
	if p.Stateroot == "" {
		p.Stateroot = "default"
	}

	// SELinux: the image's policy decides; --disable-selinux turns it off
	// in the target. Labels are computed from the image's policy by the
	// image's ostree, so the host's SELinux state does not matter.
	p.SELinux = PlanSELinux{ImagePolicy: f.selinux.Enabled, Type: f.selinux.Type, State: "disabled"}
	rootKargs := append([]string(nil), t.rootKargs...)
	switch {
	case f.selinux.Enabled && opts.DisableSELinux:
		p.SELinux.State = "force-target-disabled"
		rootKargs = append(rootKargs, "selinux=0")
	case f.selinux.Enabled:
		p.SELinux.State, p.SELinux.Label = "enabled", true
	case opts.DisableSELinux:
		rootKargs = append(rootKargs, "selinux=0")
	}
	deletes := append(append([]string(nil), f.cfg.KargDeletes...), opts.KargDeletes...)
	p.Kargs = kargs.Assemble(rootKargs, f.cfg.Kargs, f.kargsD, deletes, opts.Kargs)

	pr := f.prepareRoot
	p.PrepareRoot = PlanPrepareRoot{Composefs: "maybe"}
	if pr != nil {
		p.PrepareRoot = PlanPrepareRoot{Path: pr.Path, Composefs: pr.Composefs.String(), RequiresVerity: pr.RequiresVerity()}
	}
	if p.PrepareRoot.RequiresVerity && !verityCapable(t.rootFSType, t.rootVerity) {
		return nil, errs.New(errs.Image, "checking prepare-root.conf", p.PrepareRoot.Path,
			fmt.Errorf("the image requires fs-verity (composefs enabled=signed or verity) but the target's %s root filesystem cannot provide it", t.rootFSType),
			"install onto ext4 with the verity feature (to-disk does this) or btrfs, or change the image's prepare-root.conf")
	}

	bl := opts.Bootloader
	if bl == "" || bl == "auto" {
		bl = "grub"
	}
	if f.cfg.Bootloader == "none" && (opts.Bootloader == "" || opts.Bootloader == "auto") {
		bl = "none"
	}
	p.Bootloader = PlanBootloader{Backend: bl}
	if bl == "grub" {
		p.Bootloader.EFI = t.device != "" || t.espDevice != ""
		p.Bootloader.BIOS = t.device != ""
		if verb == "to-disk" {
			p.Bootloader.EFI, p.Bootloader.BIOS = true, true
		}
	}

	img := func(tool string) PlanTool { return PlanTool{Tool: tool, From: "image"} }
	own := func(tool string) PlanTool { return PlanTool{Tool: tool, From: "bootlace"} }
	if verb == "to-disk" {
		p.Tools = append(p.Tools, own("GPT writer"), own("FAT writer (ESP)"), img("mkfs."+t.rootFSType))
	}
	p.Tools = append(p.Tools, own("layer applier"), img("ostree"))
	if bl == "grub" {
		p.Tools = append(p.Tools, img("grub-mkimage"), own("BIOS boot code embedding"))
	}
	return p, nil
}

// verityCapable says whether a root filesystem can hold fs-verity files.
func verityCapable(fsType string, ext4Verity bool) bool {
	switch fsType {
	case "btrfs":
		return true
	case "ext4":
		return ext4Verity
	}
	return false
}
