package boundimage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/BurntSushi/toml"
	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/event"
	"github.com/bootlace/bootlace/internal/imagetree"
	"go.podman.io/storage"
	graphdriver "go.podman.io/storage/drivers"
	stypes "go.podman.io/storage/types"
)

// storeConfig is what the target's store takes from the image's
// containers-storage.conf: the booted system's podman opens the store as
// an additional image store with its own driver, so the driver must match.
type storeConfig struct {
	Driver  string
	Options []string
	// From is the file the settings came from ("" for the defaults).
	From string
}

// storageConfFiles are where the image's podman finds storage.conf, most
// specific first. A deployment has /etc; a staged tree has it at /usr/etc.
var storageConfFiles = []string{"etc/containers/storage.conf", "usr/etc/containers/storage.conf", "usr/share/containers/storage.conf"}

// imageStoreConfig reads the driver (default overlay) and the options that
// change what is written to disk from the image's storage.conf.
func imageStoreConfig(tree string) (storeConfig, error) {
	cfg := storeConfig{Driver: "overlay"}
	for _, p := range storageConfFiles {
		data, err := imagetree.ReadFile(tree, p, 1<<20)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return cfg, errs.New(errs.Image, "reading", "/"+p, err, "")
		}
		var doc struct {
			Storage struct {
				Driver  string `toml:"driver"`
				Options struct {
					ForceMask string `toml:"force_mask"`
					Overlay   struct {
						ForceMask string `toml:"force_mask"`
					} `toml:"overlay"`
				} `toml:"options"`
			} `toml:"storage"`
		}
		if _, err := toml.Decode(string(data), &doc); err != nil {
			return cfg, errs.New(errs.Image, "parsing", "/"+p, err, "fix the image's containers-storage.conf")
		}
		cfg.From = "/" + p
		if d := doc.Storage.Driver; d != "" {
			cfg.Driver = d
		}
		if d := cfg.Driver; d == "overlay2" {
			cfg.Driver = "overlay"
		}
		if cfg.Driver != "overlay" && cfg.Driver != "vfs" {
			return cfg, errs.New(errs.Image, "reading", "/"+p,
				fmt.Errorf("storage driver %q: bootlace can create bound-image stores with the overlay or vfs driver only", cfg.Driver),
				"use driver = \"overlay\" in the image's containers-storage.conf, or install with --bound-images skip")
		}
		mask := doc.Storage.Options.Overlay.ForceMask
		if mask == "" {
			mask = doc.Storage.Options.ForceMask
		}
		if mask != "" && cfg.Driver == "overlay" {
			if _, err := strconv.ParseUint(mask, 8, 32); err != nil && mask != "private" && mask != "shared" {
				return cfg, errs.New(errs.Image, "parsing", "/"+p, fmt.Errorf("force_mask %q", mask), "")
			}
			cfg.Options = append(cfg.Options, "overlay.force_mask="+mask)
		}
		break
	}
	return cfg, nil
}

// openTargetStore creates (or reopens, on a re-run) the store at
// <physRoot>/ostree/bootc/storage with the driver the image's podman
// expects. Overlay falls back to vfs, with a warning, on a filesystem that
// cannot hold overlay layers. The driver never bind-mounts its home
// (skip_mount_home): bootlace mounts nothing there, so nothing can be left.
func openTargetStore(physRoot, tree, scratch string, em event.Emitter) (storage.Store, error) {
	cfg, err := imageStoreConfig(tree)
	if err != nil {
		return nil, err
	}
	root := filepath.Join(physRoot, StorePath)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, errs.New(errs.Target, "creating bound-image store", root, err, "")
	}
	open := func(driver string, extra []string) (storage.Store, error) {
		o := stypes.StoreOptions{
			GraphRoot:          root,
			RunRoot:            filepath.Join(scratch, "target-runroot"),
			GraphDriverName:    driver,
			GraphDriverOptions: append([]string{driver + ".skip_mount_home=true"}, extra...),
		}
		if driver == "vfs" {
			o.GraphDriverOptions = extra
		}
		return storage.GetStore(o)
	}
	s, err := open(cfg.Driver, cfg.Options)
	if err != nil && cfg.Driver == "overlay" && (errors.Is(err, graphdriver.ErrNotSupported) || errors.Is(err, graphdriver.ErrIncompatibleFS)) {
		em.Warn(fmt.Sprintf("the target filesystem cannot hold overlay layers (%v): bound images are stored with the vfs driver, which the booted system's podman must also use to see them", err))
		s, err = open("vfs", nil)
	}
	if err != nil {
		return nil, errs.New(errs.Target, "creating bound-image store", root, err, "")
	}
	return s, nil
}

// authFiles are the ostree conventions for registry credentials, in the
// order bootc reads them, relative to the deployed image.
var authFiles = []string{"etc/ostree/auth.json", "usr/etc/ostree/auth.json", "usr/lib/ostree/auth.json"}

// imageAuthFile copies the image's own registry credentials, if it has
// any, into scratch (read inside the tree, so a link cannot reach a host
// file) and returns the copy's path, or "".
func imageAuthFile(tree, scratch string) (string, error) {
	for _, p := range authFiles {
		data, err := imagetree.ReadFile(tree, p, 4<<20)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", errs.New(errs.Image, "reading registry credentials", "/"+p, err, "")
		}
		// The copy keeps the image's path, which the progress message names.
		named := filepath.Join(scratch, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(named), 0o700); err != nil {
			return "", fmt.Errorf("copying /%s: %w", p, err)
		}
		if err := os.WriteFile(named, data, 0o600); err != nil {
			return "", fmt.Errorf("copying /%s: %w", p, err)
		}
		return named, nil
	}
	return "", nil
}
