package install

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/event"
	"github.com/bootlace/bootlace/internal/fetch"
	"github.com/bootlace/bootlace/internal/kargs"
	"github.com/bootlace/bootlace/internal/ostreecommit"
	"github.com/bootlace/bootlace/internal/writeback"
)

// writebackEvery is how often assemble flushes the target filesystem (see
// package writeback): often enough that little is dirty when it ends, and
// the flushes are back to back anyway while the disk is the slower side.
const writebackEvery = 250 * time.Millisecond

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

	stage := filepath.Join(work, "stage")
	// Whatever happens, no flush outlives the run; on a failure the
	// install's own error is the one to report.
	defer func() { _ = r.finishWriteback() }()
	im, err := r.fetchAndAssemble(ctx, t, src, store, j, stage)
	if err != nil {
		return err
	}

	var plan *Plan
	// A re-run after the deploy phase reads the image from its deployment.
	var resumed *deployment
	tree := stage
	if jd := j.Data.Deployment; j.done("deploy") && jd != nil && exists(filepath.Join(t.physRoot, jd.Dir)) {
		resumed = &deployment{commit: jd.Commit, dir: filepath.Join(t.physRoot, jd.Dir), ref: jd.Ref}
		tree = resumed.dir
	}
	if err := r.phase(ctx, "inspect", func(em event.Emitter) error {
		kernels, err := kernelsIn(tree)
		if err != nil {
			return err
		}
		kver, err := checkKernel(kernels, im.Source.String())
		if err != nil {
			return err
		}
		facts, err := readImageFacts(tree, im, kver)
		if err != nil {
			return err
		}
		if plan, err = computePlan(r.verb, r.opts, facts, t, r.layout, r.wipe, r.disk, r.diskName); err != nil {
			return err
		}
		r.report.Plan = plan
		if err := checkComposefs(ctx, tree, plan); err != nil {
			return err
		}
		em.Info("kernel " + kver + "; kernel arguments: " + kargs.Join(plan.Kargs))
		return nil
	}); err != nil {
		return err
	}

	var d *deployment
	if err := r.phase(ctx, "deploy", func(em event.Emitter) error {
		if resumed != nil {
			d = resumed
			em.Info("reusing deployment " + d.commit + " from an earlier run")
			return nil
		}
		// The old system's boot files go only now, once the image is
		// fetched and checked, so a failure before leaves it bootable.
		if t.replace == ReplaceAlongside {
			em.Info("clearing " + filepath.Join(t.physRoot, "boot") + " of the existing system's kernels and boot loader configuration")
			if err := cleanBootAlongside(t.physRoot); err != nil {
				return err
			}
		}
		// A deployment left by an interrupted run is redone from scratch:
		// the staged tree is still there and committing is idempotent.
		if err := clearPartialDeploy(t.physRoot); err != nil {
			return err
		}
		// The commit consumes the staged tree: from here on a re-run must
		// assemble it again. Clearing the deploy removed the bound-image
		// store with ostree/.
		if err := j.unmark("assemble"); err != nil {
			return err
		}
		if err := j.unmark("bound-images"); err != nil {
			return err
		}
		d, err = r.deploy(ctx, em, t, im, stage, plan)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(t.physRoot, d.dir)
		j.Data.Deployment = &journalDeployment{Commit: d.commit, Dir: rel, Ref: d.ref}
		if err := j.mark("deploy"); err != nil {
			return err
		}
		return os.RemoveAll(stage)
	}); err != nil {
		return err
	}

	tref := targetRef(r.opts)
	r.report.Image = im.Source.String()
	r.report.ManifestDigest = im.ManifestDigest.String()
	r.report.TargetImage = tref.String()
	r.report.Origin = originFor(tref, r.opts.Fetch.EnforceSigPolicy)
	r.report.OstreeRef = d.ref
	r.report.Commit = d.commit
	r.report.Stateroot = plan.Stateroot
	r.report.Deployment = strings.TrimPrefix(d.dir, t.physRoot)
	r.report.Kargs = plan.Kargs
	r.report.RootUUID = t.rootUUID
	r.report.BootUUID = t.bootUUID
	r.report.Filesystem = t.rootFSType

	if err := r.phase(ctx, "bound-images", func(em event.Emitter) error {
		return r.installBoundImages(ctx, em, j, t, d, plan)
	}); err != nil {
		return err
	}

	if err := r.phase(ctx, "bootloader", func(em event.Emitter) error {
		return r.installBootloader(ctx, em, t, d, plan.Bootloader.Backend)
	}); err != nil {
		return err
	}
	if err := r.writeAleph(t, im, plan.SELinux.State); err != nil {
		return err
	}
	if err := os.RemoveAll(work); err != nil {
		return fmt.Errorf("removing work directory %s: %w", work, err)
	}
	return nil
}

// fetchAndAssemble runs the fetch and assemble phases overlapped: layers
// download in parallel into the store, and each is applied to the stage as
// soon as it and the ones below it are verified. The two phases overlap in
// the event stream: assemble starts right after fetch and ends after it.
func (r *run) fetchAndAssemble(ctx context.Context, t *target, src *fetch.Source, store *fetch.Store, j *journal, stage string) (*fetch.Image, error) {
	if err := ctx.Err(); err != nil {
		return nil, interrupted(err)
	}
	fem := r.em("fetch")
	fem.Start(phaseWeights["fetch"])
	fetchStart := time.Now()
	if err := spaceCheck(t.physRoot, src.Image, store); err != nil {
		return nil, err
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pull := src.Start(pctx, store)
	fetched := make(chan struct{})
	var (
		im       *fetch.Image
		fetchErr error
		fetchDur time.Duration
	)
	go func() {
		defer close(fetched)
		im, fetchErr = pull.Wait()
		fetchDur = time.Since(fetchStart)
		if fetchErr == nil {
			fem.End()
		}
	}()

	asmErr := r.phase(ctx, "assemble", func(em event.Emitter) error {
		if j.done("deploy") && j.Data.Deployment != nil {
			em.Info("the image is already deployed by an earlier run")
			return nil
		}
		if j.done("assemble") && exists(stage) {
			em.Info("reusing the staged tree from an earlier run")
			return nil
		}
		if err := j.unmark("assemble"); err != nil {
			return err
		}
		fl, err := writeback.Start(t.physRoot, writebackEvery)
		if err != nil {
			return errs.New(errs.Target, "starting writeback of", t.physRoot, err, "")
		}
		r.writeback = fl
		r.known = ostreecommit.NewKnown()
		if err := assemble(ctx, src.Image, store, pull, stage, em, r.known); err != nil {
			return err
		}
		// The last flush runs during the commit, which needs no data
		// written; the deploy waits for it.
		r.writeback.Finish()
		// The journal may only say "assembled" once every blob is
		// verified too.
		<-fetched
		if fetchErr != nil {
			return fetchErr
		}
		return j.mark("assemble")
	})
	if asmErr != nil {
		cancel()
	}
	<-fetched
	r.report.Phases["fetch"] = fetchDur.Round(time.Millisecond).String()
	switch {
	case fetchErr != nil && !errors.Is(fetchErr, context.Canceled):
		return nil, fetchErr
	case asmErr != nil:
		return nil, asmErr
	case fetchErr != nil:
		return nil, interrupted(fetchErr)
	}
	return im, nil
}

// finishWriteback waits for the assemble's flushes, if any, and reports
// what they found: a failed write-back means the disk lost data.
func (r *run) finishWriteback() error {
	if r.writeback == nil {
		return nil
	}
	err := r.writeback.Wait()
	r.writeback = nil
	if err != nil {
		return errs.New(errs.Target, "writing the image tree to", "the target", err, "the target disk reported a write error; check it (dmesg) and try again")
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
	// ostree makes each deployment root immutable; lift that first.
	deps, _ := filepath.Glob(filepath.Join(phys, "ostree/deploy/*/deploy/*"))
	for _, d := range deps {
		if err := clearImmutable(d); err != nil {
			return fmt.Errorf("removing partial install %s: %w", d, err)
		}
	}
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
// A dry run over an interrupted install (resume true) ignores what the
// re-run would clear.
func checkEmptyRoot(root string, resume bool) error {
	if resume {
		return nil
	}
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

// dryRun computes the plan from the image's configuration in tree and
// returns it without touching the target.
func (r *run) dryRun(ctx context.Context, tree string, src *fetch.Source, kver string, t *target) (*Report, error) {
	var plan *Plan
	err := r.phase(ctx, "inspect", func(em event.Emitter) error {
		facts, err := readImageFacts(tree, src.Image, kver)
		if err != nil {
			return err
		}
		plan, err = computePlan(r.verb, r.opts, facts, t, r.layout, r.wipe, r.disk, r.diskName)
		return err
	})
	if err != nil {
		return nil, err
	}
	r.report.Plan = plan
	r.report.Image = src.Image.Source.String()
	r.report.ManifestDigest = src.Image.ManifestDigest.String()
	return r.report, nil
}

// FS_IOC_GETFLAGS / FS_IOC_SETFLAGS and FS_IMMUTABLE_FL.
const (
	fsIocGetflags = 0x80086601
	fsIocSetflags = 0x40086602
	fsImmutableFl = 0x10
)

// clearImmutable drops the immutable attribute of a directory, if set.
func clearImmutable(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return clearImmutableFd(int(f.Fd()))
}

// clearImmutableFd drops the immutable attribute of an open file, if set;
// filesystems without attributes are left as they are.
func clearImmutableFd(fd int) error {
	var flags int32
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocGetflags, uintptr(unsafe.Pointer(&flags))); e != 0 {
		if e == unix.ENOTTY || e == unix.EOPNOTSUPP {
			return nil
		}
		return e
	}
	if flags&fsImmutableFl == 0 {
		return nil
	}
	flags &^= fsImmutableFl
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocSetflags, uintptr(unsafe.Pointer(&flags))); e != 0 {
		return e
	}
	return nil
}
