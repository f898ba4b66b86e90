// Package installconfig reads the target's install configuration from a
// staged image tree: bootc install config drop-ins, kargs.d,
// prepare-root.conf and the SELinux configuration. Every function takes the
// tree root as a host path and never reads the host's own "/" (see
// DESIGN.md, "Source root is not target root").
package installconfig

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/bootlace/bootlace/internal/errs"
)

// configDirs are the install config drop-in directories, lowest priority
// first. usr/etc sits just below etc because staged ostree trees carry the
// image's /etc as /usr/etc.
var configDirs = []string{
	"usr/lib/bootc/install",
	"usr/local/lib/bootc/install",
	"usr/etc/bootc/install",
	"etc/bootc/install",
	"run/bootc/install",
}

// Allowed values, as bootc accepts them (bootloader without HEAD's grub-cc,
// which bootlace cannot install).
var (
	filesystemTypes = []string{"xfs", "ext4", "btrfs"}
	blockSetups     = []string{"direct", "tpm2-luks"}
	bootloaders     = []string{"grub", "systemd", "none"}
)

// Config is the merged [install] table. Optional scalars whose zero value is
// meaningful are pointers; the JSON form is what print-configuration prints.
type Config struct {
	RootFSType                string            `json:"root-fs-type,omitempty"`
	Filesystem                *FilesystemConfig `json:"filesystem,omitempty"`
	Block                     []string          `json:"block,omitempty"`
	Kargs                     []string          `json:"kargs,omitempty"`
	KargDeletes               []string          `json:"karg-deletes,omitempty"`
	Ostree                    *OstreeConfig     `json:"ostree,omitempty"`
	Stateroot                 string            `json:"stateroot,omitempty"`
	RootMountSpec             *string           `json:"root-mount-spec,omitempty"`
	BootMountSpec             *string           `json:"boot-mount-spec,omitempty"`
	Bootupd                   *BootupdConfig    `json:"bootupd,omitempty"`
	Bootloader                string            `json:"bootloader,omitempty"`
	DiscoverablePartitions    *bool             `json:"discoverable-partitions,omitempty"`
	EnforceContainerSigpolicy *bool             `json:"enforce-container-sigpolicy,omitempty"`
}

// FilesystemConfig is [install.filesystem].
type FilesystemConfig struct {
	Root *RootFilesystemConfig `json:"root,omitempty"`
}

// RootFilesystemConfig is [install.filesystem.root].
type RootFilesystemConfig struct {
	Type string `json:"type,omitempty"`
}

// OstreeConfig is [install.ostree].
type OstreeConfig struct {
	BLSAppendExceptDefault *string `json:"bls-append-except-default,omitempty"`
}

// BootupdConfig is [install.bootupd].
type BootupdConfig struct {
	SkipBootUUID *bool `json:"skip-boot-uuid,omitempty"`
}

// Source is one drop-in file found while loading, in processing order.
type Source struct {
	// Path is the file's path inside the image, e.g. /usr/lib/bootc/install/00.toml.
	Path string `json:"path"`
	// Applied is true when the fragment was merged into the result.
	Applied bool `json:"applied"`
	// Skipped says why a file was not merged: shadowed, masked, architecture.
	Skipped string `json:"skipped,omitempty"`
	// Warnings are ignorable problems, e.g. unknown [install.ostree] keys.
	Warnings []string `json:"warnings,omitempty"`
}

var installSchema = map[string]field{
	"install": {kind: kindTable, fields: map[string]field{
		"root-fs-type": {kind: kindString, enum: filesystemTypes},
		"filesystem": {kind: kindTable, fields: map[string]field{
			"root": {kind: kindTable, fields: map[string]field{
				"type": {kind: kindString, enum: filesystemTypes},
			}},
		}},
		"block":                       {kind: kindStringArray, enum: blockSetups},
		"kargs":                       {kind: kindStringArray},
		"karg-deletes":                {kind: kindStringArray},
		"match-architectures":         {kind: kindStringArray},
		"stateroot":                   {kind: kindString},
		"root-mount-spec":             {kind: kindString},
		"boot-mount-spec":             {kind: kindString},
		"bootloader":                  {kind: kindString, enum: bootloaders},
		"discoverable-partitions":     {kind: kindBool},
		"enforce-container-sigpolicy": {kind: kindBool},
		"bootupd": {kind: kindTable, fields: map[string]field{
			"skip-boot-uuid": {kind: kindBool},
		}},
		// bootc does not deny unknown fields here, it only warns.
		"ostree": {kind: kindTable, lax: true, fields: map[string]field{
			"bls-append-except-default": {kind: kindString},
		}},
	}},
}

const opInstallConfig = "reading install config"

// Load reads and merges the install config drop-ins of the image tree at
// root for arch (a GOARCH or Rust architecture name). Same-named files in a
// later directory replace earlier ones; survivors merge in file-name order.
// With no applicable file the result is an empty Config with no defaults
// filled in, as bootc's print-configuration shows it.
func Load(root, arch string) (*Config, []Source, error) {
	t, err := openTree(root)
	if err != nil {
		return nil, nil, err
	}
	defer t.Close()
	rarch := RustArch(arch)

	type entry struct {
		path   string // in-tree, resolved directory + name
		name   string
		prio   int
		masked bool
	}
	var all []entry
	for prio, dir := range configDirs {
		rdir, err := t.resolve(dir)
		if notExist(err) {
			continue
		}
		if err != nil {
			return nil, nil, errs.New(errs.Image, opInstallConfig, "/"+dir, err, "")
		}
		if ok, err := t.isDir(rdir); err != nil || !ok {
			continue
		}
		names, err := t.readDirNames(rdir)
		if err != nil {
			return nil, nil, errs.New(errs.Image, opInstallConfig, "/"+dir, err, "")
		}
		for _, n := range names {
			if strings.HasPrefix(n, ".") || !strings.HasSuffix(n, ".toml") {
				continue
			}
			p := path.Join(rdir, n)
			all = append(all, entry{path: p, name: n, prio: prio, masked: t.isMasked(p)})
		}
	}
	// File-name order regardless of directory; within a name, lowest
	// priority first so the last one wins.
	slices.SortStableFunc(all, func(a, b entry) int {
		if c := strings.Compare(a.name, b.name); c != 0 {
			return c
		}
		return a.prio - b.prio
	})

	var (
		cfg     *Config
		sources []Source
	)
	for i, e := range all {
		src := Source{Path: "/" + e.path}
		switch {
		case i+1 < len(all) && all[i+1].name == e.name:
			src.Skipped = "shadowed by /" + all[i+1].path
		case e.masked:
			src.Skipped = "masked (symlink to /dev/null)"
		}
		if src.Skipped != "" {
			sources = append(sources, src)
			continue
		}
		data, err := t.readFile(e.path)
		if err != nil {
			return nil, nil, errs.New(errs.Image, opInstallConfig, src.Path, err, "")
		}
		frag, match, warnings, err := parseFragment(src.Path, data)
		if err != nil {
			return nil, nil, err
		}
		src.Warnings = warnings
		if match != nil && !slices.Contains(match, rarch) {
			src.Skipped = fmt.Sprintf("match-architectures %v does not include %s", match, rarch)
			sources = append(sources, src)
			continue
		}
		src.Applied = true
		sources = append(sources, src)
		if cfg == nil {
			cfg = frag
		} else {
			cfg.merge(frag)
		}
	}
	if cfg == nil {
		return &Config{}, sources, nil
	}
	cfg.canonicalize()
	return cfg, sources, nil
}

// parseFragment parses one install config file. imgPath names it in errors.
// match is nil when the file has no match-architectures.
func parseFragment(imgPath string, data []byte) (cfg *Config, match []string, warnings []string, err error) {
	doc, err := parseTOML(imgPath, data, opInstallConfig)
	if err != nil {
		return nil, nil, nil, err
	}
	warnings, err = doc.validate(opInstallConfig, nil, doc.data, installSchema, false)
	if err != nil {
		return nil, nil, nil, err
	}
	cfg = &Config{}
	in, ok := getTable(doc.data, "install")
	if !ok {
		return cfg, nil, warnings, nil
	}
	if v, ok := getStrings(in, "match-architectures"); ok {
		match = v
	}
	cfg.RootFSType, _ = getString(in, "root-fs-type")
	if fsT, ok := getTable(in, "filesystem"); ok {
		cfg.Filesystem = &FilesystemConfig{}
		if r, ok := getTable(fsT, "root"); ok {
			cfg.Filesystem.Root = &RootFilesystemConfig{}
			cfg.Filesystem.Root.Type, _ = getString(r, "type")
		}
	}
	if v, ok := getStrings(in, "block"); ok {
		if len(v) == 0 {
			return nil, nil, nil, doc.errorf(opInstallConfig, []string{"install", "block"}, "must list at least one of %s", strings.Join(blockSetups, ", "))
		}
		cfg.Block = v
	}
	cfg.Kargs, _ = getStrings(in, "kargs")
	cfg.KargDeletes, _ = getStrings(in, "karg-deletes")
	if v, ok := getString(in, "stateroot"); ok {
		if v == "" || strings.ContainsAny(v, "/\x00") || v == "." || v == ".." {
			return nil, nil, nil, doc.errorf(opInstallConfig, []string{"install", "stateroot"}, "invalid stateroot name %q", v)
		}
		cfg.Stateroot = v
	}
	if v, ok := getString(in, "root-mount-spec"); ok {
		cfg.RootMountSpec = &v
	}
	if v, ok := getString(in, "boot-mount-spec"); ok {
		cfg.BootMountSpec = &v
	}
	cfg.Bootloader, _ = getString(in, "bootloader")
	if v, ok := getBool(in, "discoverable-partitions"); ok {
		cfg.DiscoverablePartitions = &v
	}
	if v, ok := getBool(in, "enforce-container-sigpolicy"); ok {
		cfg.EnforceContainerSigpolicy = &v
	}
	if b, ok := getTable(in, "bootupd"); ok {
		cfg.Bootupd = &BootupdConfig{}
		if v, ok := getBool(b, "skip-boot-uuid"); ok {
			cfg.Bootupd.SkipBootUUID = &v
		}
	}
	if o, ok := getTable(in, "ostree"); ok {
		cfg.Ostree = &OstreeConfig{}
		if v, ok := getString(o, "bls-append-except-default"); ok {
			cfg.Ostree.BLSAppendExceptDefault = &v
		}
	}
	return cfg, match, warnings, nil
}

// merge folds a later fragment into c: scalars are replaced when set, kargs
// and karg-deletes append, block is replaced wholesale, sub-tables merge
// field by field.
func (c *Config) merge(o *Config) {
	setString(&c.RootFSType, o.RootFSType)
	if o.Filesystem != nil && o.Filesystem.Root != nil {
		if c.Filesystem == nil {
			c.Filesystem = &FilesystemConfig{}
		}
		if c.Filesystem.Root == nil {
			c.Filesystem.Root = &RootFilesystemConfig{}
		}
		setString(&c.Filesystem.Root.Type, o.Filesystem.Root.Type)
	} else if o.Filesystem != nil && c.Filesystem == nil {
		c.Filesystem = &FilesystemConfig{}
	}
	if o.Block != nil {
		c.Block = slices.Clone(o.Block)
	}
	c.Kargs = append(c.Kargs, o.Kargs...)
	c.KargDeletes = append(c.KargDeletes, o.KargDeletes...)
	setString(&c.Stateroot, o.Stateroot)
	setPtr(&c.RootMountSpec, o.RootMountSpec)
	setPtr(&c.BootMountSpec, o.BootMountSpec)
	setString(&c.Bootloader, o.Bootloader)
	setPtr(&c.DiscoverablePartitions, o.DiscoverablePartitions)
	setPtr(&c.EnforceContainerSigpolicy, o.EnforceContainerSigpolicy)
	if o.Bootupd != nil {
		if c.Bootupd == nil {
			c.Bootupd = &BootupdConfig{}
		}
		setPtr(&c.Bootupd.SkipBootUUID, o.Bootupd.SkipBootUUID)
	}
	if o.Ostree != nil {
		if c.Ostree == nil {
			c.Ostree = &OstreeConfig{}
		}
		setPtr(&c.Ostree.BLSAppendExceptDefault, o.Ostree.BLSAppendExceptDefault)
	}
}

func setString(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

func setPtr[T any](dst **T, v *T) {
	if v != nil {
		*dst = v
	}
}

// canonicalize applies bootc's rules: filesystem.root.type wins over
// root-fs-type and both are kept in sync; an unset block means ["direct"].
func (c *Config) canonicalize() {
	if c.Filesystem != nil && c.Filesystem.Root != nil && c.Filesystem.Root.Type != "" {
		c.RootFSType = c.Filesystem.Root.Type
	} else if c.RootFSType != "" {
		if c.Filesystem == nil {
			c.Filesystem = &FilesystemConfig{}
		}
		c.Filesystem.Root = &RootFilesystemConfig{Type: c.RootFSType}
	}
	if c.Block == nil {
		c.Block = []string{"direct"}
	}
}

// RootFS returns the configured root filesystem type, or "" when unset.
func (c *Config) RootFS() string {
	if c == nil {
		return ""
	}
	if c.Filesystem != nil && c.Filesystem.Root != nil && c.Filesystem.Root.Type != "" {
		return c.Filesystem.Root.Type
	}
	return c.RootFSType
}

// JSON returns the print-configuration output: the merged [install] table in
// kebab-case with unset fields omitted. kargs and karg-deletes are only
// included when all is true, like `bootc install print-configuration --all`.
func (c *Config) JSON(all bool) ([]byte, error) {
	out := Config{}
	if c != nil {
		out = *c
	}
	if !all {
		out.Kargs = nil
		out.KargDeletes = nil
	}
	b, err := json.Marshal(&out)
	if err != nil {
		return nil, fmt.Errorf("encoding install config: %w", err)
	}
	return b, nil
}

// RustArch maps a GOARCH to the name Rust's std::env::consts::ARCH uses,
// which is what bootc matches match-architectures against. Names that are
// already Rust names pass through.
func RustArch(goarch string) string {
	switch goarch {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	case "ppc64le", "ppc64":
		return "powerpc64"
	case "386":
		return "x86"
	case "loong64":
		return "loongarch64"
	case "mips64le":
		return "mips64"
	case "mipsle":
		return "mips"
	default:
		return goarch
	}
}
