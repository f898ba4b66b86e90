package boundimage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/event"
	"github.com/bootlace/bootlace/internal/fetch"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/image"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/signature"
	istorage "go.podman.io/image/v5/storage"
	"go.podman.io/image/v5/types"
	"go.podman.io/storage"
	stypes "go.podman.io/storage/types"
	"golang.org/x/sync/errgroup"
)

// Mode says where bound images come from (bootc's --bound-images).
type Mode string

const (
	// Stored copies each image from the host's containers-storage and
	// fails when one is not there.
	Stored Mode = "stored"
	// Pull fetches each image from its registry.
	Pull Mode = "pull"
	// Skip installs no bound images.
	Skip Mode = "skip"
)

// StorePath is the target's bound-image store relative to the physical
// root; the image's /usr/lib/bootc/storage links to /sysroot/<StorePath>.
const StorePath = "ostree/bootc/storage"

// Options configure Install.
type Options struct {
	Mode Mode
	// Fetch is registry access and trust, shared with the OS image:
	// --authfile, --cert-dir, --tls-verify, --registries-dir,
	// --registries-conf and the signature policy. Creds is ignored.
	Fetch fetch.Options
	// ScratchDir is a private host directory for the stores' run-time
	// files, caches and the image's auth file; created if needed.
	ScratchDir string
	// TempDir holds blobs while they are copied into the store; it should
	// be on the target, not the host. Created if needed.
	TempDir string
	// Label, when set, labels the finished store (SELinux).
	Label func(store string) error
}

// Result is what one bound image became in the target's store.
type Result struct {
	Image string `json:"image"`
	// Digest is the manifest digest in the target's store.
	Digest string `json:"manifest-digest"`
	// ID is the image ID (its config digest).
	ID string `json:"image-id"`
	// From is "registry" or "containers-storage".
	From string `json:"from"`
}

// source is one image to copy, resolved.
type source struct {
	img   Image
	named reference.Named // with a tag (":latest" when none was given) or a digest
	ref   types.ImageReference
	total int64 // bytes the copy reads, for progress; 0 when unknown
	from  string
}

// Install copies imgs into the target's store under physRoot, reading
// registry credentials conventions from tree (the deployed image). With
// Skip, or no images, it does nothing.
func Install(ctx context.Context, physRoot, tree string, imgs []Image, opts Options, em event.Emitter) ([]Result, error) {
	imgs = unique(imgs)
	switch {
	case len(imgs) == 0:
		em.Info("the image declares no bound images")
		return []Result{}, nil
	case opts.Mode == Skip:
		em.Info(fmt.Sprintf("skipping %d bound images (--bound-images skip): %s", len(imgs), strings.Join(Refs(imgs), ", ")))
		return []Result{}, nil
	case opts.Mode != Stored && opts.Mode != Pull:
		return nil, errs.New(errs.Usage, "installing bound images", "", fmt.Errorf("unknown mode %q", opts.Mode), "use stored, pull or skip")
	}
	// --creds names no registry: it is for the OS image's, and must not be
	// sent to whatever registries the image's declarations name.
	opts.Fetch.Creds = ""
	sys, err := fetch.SystemContext(opts.Fetch, filepath.Join(opts.ScratchDir, "cache"))
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(sys.BlobInfoCacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", sys.BlobInfoCacheDir, err)
	}
	if opts.Fetch.AuthFile == "" {
		auth, err := imageAuthFile(tree, opts.ScratchDir)
		if err != nil {
			return nil, err
		}
		if auth != "" {
			sys.AuthFilePath = auth
			em.Info("registry credentials for bound images from the image's /" + strings.TrimPrefix(auth, opts.ScratchDir+"/"))
		}
	}
	// Fail on a bad policy before anything is written; each copy then
	// gets its own context (a PolicyContext is not safe for concurrent use).
	pc, _, err := fetch.PolicyContext(opts.Fetch) // the OS image's fetch already warned about a missing policy
	if err != nil {
		return nil, err
	}
	_ = pc.Destroy()

	var srcs []*source
	var host storage.Store
	defer func() {
		if host != nil {
			_, _ = host.Shutdown(true)
		}
	}()
	if opts.Mode == Stored {
		host, srcs, err = fromHostStorage(imgs, opts.ScratchDir)
	} else {
		srcs, err = fromRegistries(imgs)
	}
	if err != nil {
		return nil, err
	}
	for _, s := range srcs {
		if s.total, err = sizeOf(ctx, s, sys); err != nil {
			return nil, err
		}
	}

	destSys := *sys
	if opts.TempDir != "" {
		if err := os.MkdirAll(opts.TempDir, 0o700); err != nil {
			return nil, errs.New(errs.Target, "creating", opts.TempDir, err, "")
		}
		destSys.BigFilesTemporaryDir = opts.TempDir
	}

	start := time.Now()
	dest, err := openTargetStore(physRoot, tree, opts.ScratchDir, em)
	if err != nil {
		return nil, err
	}
	em.Info(fmt.Sprintf("bound-image store %s ready (%s driver) in %s", filepath.Join(physRoot, StorePath), dest.GraphDriverName(), time.Since(start).Round(time.Millisecond)))
	results, err := copyAll(ctx, opts.Fetch, srcs, dest, sys, &destSys, em)
	if _, serr := dest.Shutdown(true); serr != nil && err == nil {
		err = fmt.Errorf("closing bound-image store %s: %w", filepath.Join(physRoot, StorePath), serr)
	}
	if err != nil {
		return nil, err
	}
	if opts.Label != nil {
		if err := opts.Label(filepath.Join(physRoot, StorePath)); err != nil {
			return nil, err
		}
	}
	return results, nil
}

func unique(imgs []Image) []Image {
	seen := map[string]bool{}
	var out []Image
	for _, im := range imgs {
		if !seen[im.Ref] {
			seen[im.Ref] = true
			out = append(out, im)
		}
	}
	return out
}

// parseRef normalises a declared reference the way podman does
// (docker.io/library/ for short names, :latest when there is no tag).
func parseRef(im Image) (reference.Named, error) {
	named, err := reference.ParseNormalizedNamed(im.Ref)
	if err != nil {
		return nil, errs.New(errs.Image, "parsing bound image reference "+im.Ref+" declared in", im.Decl, err, "use a full reference such as quay.io/example/app:latest")
	}
	return reference.TagNameOnly(named), nil
}

func fromRegistries(imgs []Image) ([]*source, error) {
	var out []*source
	for _, im := range imgs {
		named, err := parseRef(im)
		if err != nil {
			return nil, err
		}
		ref, err := docker.NewReference(named)
		if err != nil {
			return nil, errs.New(errs.Image, "parsing bound image reference "+im.Ref+" declared in", im.Decl, err, "")
		}
		out = append(out, &source{img: im, named: named, ref: ref, from: "registry"})
	}
	return out, nil
}

// fromHostStorage finds every image in the host's containers-storage
// (storage.conf, or the file CONTAINERS_STORAGE_CONF names) and pins each to
// the image ID found there. The host store is opened with a private run
// root so that nothing on the host changes; a store that does not exist is
// not created.
func fromHostStorage(imgs []Image, scratch string) (storage.Store, []*source, error) {
	// Loaded afresh (DefaultStoreOptions caches the first answer per process).
	hostOpts, err := stypes.LoadStoreOptions(stypes.LoadOptions{})
	if err != nil {
		return nil, nil, errs.New(errs.Fetch, "reading the host's containers storage configuration", os.Getenv("CONTAINERS_STORAGE_CONF"), err, "")
	}
	missing := func(names []string, why string) error {
		return errs.New(errs.Fetch, "finding bound images in the host's containers-storage", hostOpts.GraphRoot,
			fmt.Errorf("%s: %s", why, strings.Join(names, ", ")),
			"pull them into the host's storage first (podman pull IMAGE), or pass --bound-images pull to fetch them from their registries")
	}
	names := make([]reference.Named, len(imgs))
	all := make([]string, len(imgs))
	for i, im := range imgs {
		if names[i], err = parseRef(im); err != nil {
			return nil, nil, err
		}
		all[i] = names[i].String()
	}
	if _, err := os.Stat(hostOpts.GraphRoot); errors.Is(err, os.ErrNotExist) {
		return nil, nil, missing(all, "the host has no containers-storage, so these images are not stored")
	}
	hostOpts.RunRoot = filepath.Join(scratch, "host-runroot")
	hostOpts.GraphDriverOptions = append(hostOpts.GraphDriverOptions, "overlay.skip_mount_home=true")
	host, err := storage.GetStore(hostOpts)
	if err != nil {
		return nil, nil, errs.New(errs.Fetch, "opening the host's containers-storage", hostOpts.GraphRoot, err, "")
	}
	var out []*source
	var absent []string
	for i, im := range imgs {
		named := names[i]
		simg, err := host.Image(named.String())
		if err != nil {
			absent = append(absent, named.String())
			continue
		}
		ref, err := istorage.Transport.NewStoreReference(host, named, simg.ID)
		if err != nil {
			_, _ = host.Shutdown(true)
			return nil, nil, errs.New(errs.Fetch, "referring to stored image", named.String(), err, "")
		}
		out = append(out, &source{img: im, named: named, ref: ref, from: "containers-storage"})
	}
	if len(absent) > 0 {
		_, _ = host.Shutdown(true)
		return nil, nil, missing(absent, "not in the host's containers-storage")
	}
	return host, out, nil
}

// sizeOf reads the source's manifest to learn how many bytes the copy will
// read, so progress has a constant total. A registry image is pinned to the
// digest read here, so the copy cannot see a tag that moved meanwhile.
func sizeOf(ctx context.Context, s *source, sys *types.SystemContext) (int64, error) {
	src, err := s.ref.NewImageSource(ctx, sys)
	if err != nil {
		return 0, fetchErr("opening bound image", s, err)
	}
	defer src.Close()
	raw, mt, err := src.GetManifest(ctx, nil)
	if err != nil {
		return 0, fetchErr("reading the manifest of bound image", s, err)
	}
	unparsed := image.UnparsedInstance(src, nil)
	if manifest.MIMETypeIsMultiImage(mt) {
		list, err := manifest.ListFromBlob(raw, mt)
		if err != nil {
			return 0, errs.New(errs.Fetch, "parsing the manifest list of bound image", s.named.String(), err, "")
		}
		inst, err := list.ChooseInstance(sys)
		if err != nil {
			return 0, errs.New(errs.Fetch, "choosing the instance for this machine of bound image", s.named.String(), err, "")
		}
		unparsed = image.UnparsedInstance(src, &inst)
	}
	if s.from == "registry" {
		d, err := manifest.Digest(raw)
		if err != nil {
			return 0, errs.New(errs.Fetch, "hashing the manifest of bound image", s.named.String(), err, "")
		}
		pinned, err := reference.WithDigest(reference.TrimNamed(s.named), d)
		if err != nil {
			return 0, errs.New(errs.Fetch, "pinning bound image", s.named.String(), err, "")
		}
		if s.ref, err = docker.NewReference(pinned); err != nil {
			return 0, errs.New(errs.Fetch, "pinning bound image", s.named.String(), err, "")
		}
	}
	img, err := image.FromUnparsedImage(ctx, sys, unparsed)
	if err != nil {
		return 0, fetchErr("reading bound image", s, err)
	}
	infos, err := img.LayerInfosForCopy(ctx)
	if err != nil {
		return 0, fetchErr("listing the layers of bound image", s, err)
	}
	if infos == nil {
		infos = img.LayerInfos()
	}
	var total int64
	for _, l := range infos {
		if l.Size < 0 {
			return 0, nil
		}
		total += l.Size
	}
	return total, nil
}

func fetchErr(op string, s *source, err error) error {
	if k := errs.KindOf(err); k == errs.Fetch || k == errs.Image || k == errs.Usage {
		return err
	}
	hint := "check the image name, the network, the credentials (--authfile, or the image's /etc/ostree/auth.json), --cert-dir/--tls-verify and registries.conf mirrors (--registries-conf)"
	if s.from == "containers-storage" {
		hint = "check the host's containers-storage (podman images)"
	}
	return errs.New(errs.Fetch, op, s.named.String()+" (declared in "+s.img.Decl+")", err, hint)
}

// copyAll copies the images in parallel, each reporting its bytes as one
// progress item named after the image.
func copyAll(ctx context.Context, fo fetch.Options, srcs []*source, dest storage.Store, sys, destSys *types.SystemContext, em event.Emitter) ([]Result, error) {
	parallel := fo.Parallel
	if parallel <= 0 {
		parallel = 3
	}
	results := make([]Result, len(srcs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for i, s := range srcs {
		g.Go(func() error {
			pc, _, err := fetch.PolicyContext(fo)
			if err != nil {
				return err
			}
			defer func() { _ = pc.Destroy() }()
			r, err := copyOne(gctx, pc, s, dest, sys, destSys, parallel, em)
			results[i] = r
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return results, nil
}

func copyOne(ctx context.Context, pc *signature.PolicyContext, s *source, dest storage.Store, sys, destSys *types.SystemContext, parallel int, em event.Emitter) (Result, error) {
	res := Result{Image: s.named.String(), From: s.from}
	dref, err := istorage.Transport.NewStoreReference(dest, s.named, "")
	if err != nil {
		return res, errs.New(errs.Image, "naming bound image in the target's store", s.named.String(), err, "")
	}
	item := s.named.String()
	progress := make(chan types.ProgressProperties)
	done := make(chan struct{})
	var n, reported int64
	go func() {
		defer close(done)
		for p := range progress {
			switch p.Event {
			case types.ProgressEventRead:
				n += int64(p.OffsetUpdate)
			case types.ProgressEventSkipped:
				if p.Artifact.Size > 0 {
					n += p.Artifact.Size
				}
			default:
				continue
			}
			if s.total > 0 && n > s.total {
				n = s.total
			}
			// The stream promises done grows and is never repeated.
			if n > reported {
				reported = n
				em.Progress(item, n, s.total)
			}
		}
	}()
	start := time.Now()
	em.Info(fmt.Sprintf("copying bound image %s from %s", item, s.from))
	man, err := copy.Image(ctx, pc, dref, s.ref, &copy.Options{
		SourceCtx: sys, DestinationCtx: destSys,
		Progress: progress, ProgressInterval: 200 * time.Millisecond,
		MaxParallelDownloads: uint(parallel),
	})
	close(progress)
	<-done
	if err != nil {
		return res, fetchErr("copying bound image", s, err)
	}
	if s.total > 0 && reported < s.total {
		em.Progress(item, s.total, s.total)
	}
	d, err := manifest.Digest(man)
	if err != nil {
		return res, errs.New(errs.Fetch, "hashing the stored manifest of bound image", item, err, "")
	}
	res.Digest = d.String()
	if simg, err := dest.Image(item); err == nil {
		res.ID = "sha256:" + simg.ID
	}
	em.Info(fmt.Sprintf("bound image %s stored (%s) in %s", item, res.Digest, time.Since(start).Round(time.Millisecond)))
	return res, nil
}
