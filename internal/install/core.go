package install

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/event"
	"github.com/bootlace/bootlace/internal/fetch"
	"github.com/bootlace/bootlace/internal/kargs"
)

// installOnto runs every phase from fetch to bootloader onto a mounted
// target. src is already open and checked.
func (r *run) installOnto(ctx context.Context, t *target, src *fetch.Source) error {
	work := filepath.Join(t.physRoot, workDirName)
	if err := os.MkdirAll(work, 0o700); err != nil {
		return errs.New(errs.Target, "creating work directory", work, err, "")
	}
	j, err := openJournal(work)
	if err != nil {
		return err
	}
	j.forImage(src.Image.ManifestDigest.String())
	if err := j.save(); err != nil {
		return err
	}
	store, err := fetch.OpenStore(filepath.Join(work, "store"))
	if err != nil {
		return err
	}

	var im *fetch.Image
	if err := r.phase(ctx, "fetch", func(em event.Emitter) error {
		if err := spaceCheck(t.physRoot, src.Image, store); err != nil {
			return err
		}
		im, err = src.Download(ctx, store)
		return err
	}); err != nil {
		return err
	}

	stage := filepath.Join(work, "stage")
	if err := r.phase(ctx, "assemble", func(em event.Emitter) error {
		if j.done("assemble") && exists(stage) {
			em.Info("reusing the staged tree from an earlier run")
			return nil
		}
		if err := j.unmark("assemble"); err != nil {
			return err
		}
		if err := assemble(ctx, im, stage, em); err != nil {
			return err
		}
		return j.mark("assemble")
	}); err != nil {
		return err
	}

	var (
		cfg       *imageConfig
		args      []string
		stateroot string
	)
	if err := r.phase(ctx, "inspect", func(em event.Emitter) error {
		cfg, err = readImageConfig(stage, im.Source.String())
		if err != nil {
			return err
		}
		rootKargs := append([]string(nil), t.rootKargs...)
		if r.opts.DisableSELinux {
			rootKargs = append(rootKargs, "selinux=0")
		}
		deletes := append(append([]string(nil), cfg.install.KargDeletes...), r.opts.KargDeletes...)
		args = kargs.Assemble(rootKargs, cfg.install.Kargs, cfg.kargsD, deletes, r.opts.Kargs)
		stateroot = r.opts.Stateroot
		if stateroot == "" {
			stateroot = cfg.install.Stateroot
		}
		if stateroot == "" {
			stateroot = "default"
		}
		em.Info("kernel " + cfg.kernel + "; kernel arguments: " + kargs.Join(args))
		return nil
	}); err != nil {
		return err
	}

	var d *deployment
	if err := r.phase(ctx, "deploy", func(em event.Emitter) error {
		// A deployment left by an interrupted run is redone from scratch:
		// the staged tree is still there and committing is idempotent.
		if !j.done("deploy") {
			if err := clearPartialDeploy(t.physRoot); err != nil {
				return err
			}
		}
		d, err = r.deploy(ctx, em, t, im, stage, cfg, args, stateroot)
		if err != nil {
			return err
		}
		if err := j.mark("deploy"); err != nil {
			return err
		}
		return os.RemoveAll(stage)
	}); err != nil {
		return err
	}

	tref, _ := r.targetRef()
	r.report.Image = im.Source.String()
	r.report.ManifestDigest = im.ManifestDigest.String()
	r.report.TargetImage = tref.String()
	r.report.Origin = originFor(tref, r.opts.Fetch.EnforceSigPolicy)
	r.report.OstreeRef = d.ref
	r.report.Commit = d.commit
	r.report.Stateroot = stateroot
	r.report.Deployment = strings.TrimPrefix(d.dir, t.physRoot)
	r.report.Kargs = args
	r.report.RootUUID = t.rootUUID
	r.report.BootUUID = t.bootUUID
	r.report.Filesystem = t.rootFSType

	if err := r.phase(ctx, "bootloader", func(em event.Emitter) error {
		return r.installBootloader(ctx, em, t, d)
	}); err != nil {
		return err
	}
	selinux := "disabled"
	if r.opts.DisableSELinux {
		selinux = "force-target-disabled"
	}
	if err := r.writeAleph(t, im, selinux); err != nil {
		return err
	}
	if err := os.RemoveAll(work); err != nil {
		return fmt.Errorf("removing work directory %s: %w", work, err)
	}
	return nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// clearPartialDeploy removes what an interrupted deploy may have left: the
// ostree tree and ostree's boot entries. Nothing else on the target is ours.
func clearPartialDeploy(phys string) error {
	for _, p := range []string{"ostree", "boot/ostree", "boot/loader", "boot/loader.0", "boot/loader.1", "boot/grub", ".bootc-aleph.json"} {
		if err := os.RemoveAll(filepath.Join(phys, p)); err != nil {
			return fmt.Errorf("removing partial install %s: %w", filepath.Join(phys, p), err)
		}
	}
	return nil
}

// checkEmptyRoot applies bootc's rule for to-filesystem targets: only
// lost+found, an empty boot/ (or one with lost+found or efi), and our own
// work directory may be present.
func checkEmptyRoot(root string) error {
	ents, err := os.ReadDir(root)
	if err != nil {
		return errs.New(errs.Target, "reading target", root, err, "")
	}
	for _, e := range ents {
		switch e.Name() {
		case "lost+found", workDirName:
			continue
		case "boot":
			sub, err := os.ReadDir(filepath.Join(root, "boot"))
			if err != nil {
				return errs.New(errs.Target, "reading target", filepath.Join(root, "boot"), err, "")
			}
			for _, s := range sub {
				if s.Name() != "lost+found" && s.Name() != "efi" {
					return errs.New(errs.Target, "checking target", root, fmt.Errorf("boot/%s is not empty", s.Name()), "install onto an empty filesystem")
				}
			}
		default:
			return errs.New(errs.Target, "checking target", root, fmt.Errorf("found %s: the target filesystem is not empty", e.Name()), "install onto an empty filesystem")
		}
	}
	return nil
}

// resumable reports whether root holds an interrupted bootlace install,
// whose partial state a re-run may clear.
func resumable(root string) bool {
	return exists(filepath.Join(root, workDirName, "journal.json"))
}
