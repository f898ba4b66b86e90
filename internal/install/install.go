package install

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/bootlace/bootlace/internal/blockdev"
	"github.com/bootlace/bootlace/internal/cleanup"
	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/event"
	"github.com/bootlace/bootlace/internal/fetch"
	"github.com/bootlace/bootlace/internal/imgref"
	"github.com/bootlace/bootlace/internal/layer"
	"github.com/bootlace/bootlace/internal/ostreecommit"
	"github.com/bootlace/bootlace/internal/writeback"
	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// workDirName is bootlace's scratch area on the target's physical root:
// the blob store, the staged tree and the journal. It is removed once the
// install has succeeded.
const workDirName = ".bootlace"

// Phase weights for progress bars; they add up to 1.
var phaseWeights = map[string]float64{
	"resolve": 0.02, "storage": 0.05, "fetch": 0.28, "assemble": 0.28, "inspect": 0.01,
	"deploy": 0.24, "bound-images": 0.05, "bootloader": 0.04, "finalize": 0.03,
}

// run is the state of one install.
type run struct {
	opts   Options
	sink   event.Sink
	stack  cleanup.Stack
	report *Report
	// verb, layout and wipe feed the plan.
	verb   string
	layout []PlanPartition
	wipe   bool
	// disk describes a to-disk target for the plan; name is what the user
	// gave (the image file with --via-loopback).
	disk     *blockdev.Disk
	diskName string
	// scratch is this run's host scratch directory (see scratchDir).
	scratch string
	// writeback flushes the target from assemble until the deploy.
	writeback *writeback.Flusher
	// known has the checksums assemble computed for the commit; nil when
	// the staged tree comes from an earlier run.
	known *ostreecommit.Known
}

func newRun(verb string, opts Options) *run {
	sink := opts.Events
	if sink == nil {
		sink = event.Discard{}
	}
	return &run{verb: verb, opts: opts, sink: sink, report: &Report{Phases: map[string]string{}, phaseStart: map[string]time.Time{},
		SourceDetection: opts.Detected}}
}

func (r *run) em(phase string) event.Emitter { return event.Emitter{Sink: r.sink, Phase: phase} }

func (r *run) warn(phase, msg string) {
	r.report.Warnings = append(r.report.Warnings, msg)
	r.em(phase).Warn(msg)
}

// phase runs fn as a named phase, timing it and reporting start and end.
func (r *run) phase(ctx context.Context, name string, fn func(event.Emitter) error) error {
	if err := ctx.Err(); err != nil {
		return interrupted(err)
	}
	em := r.em(name)
	em.Start(phaseWeights[name])
	start := time.Now()
	err := fn(em)
	r.report.Phases[name] = time.Since(start).Round(time.Millisecond).String()
	if err != nil {
		if ctx.Err() != nil {
			return interrupted(ctx.Err())
		}
		return err
	}
	em.End()
	return nil
}

func interrupted(err error) error {
	return errs.New(errs.Interrupted, "install interrupted", "", err, "run the same command again to resume; fetched blobs are reused")
}

// target is a mounted physical root ready to receive a deployment.
type target struct {
	physRoot   string
	rootUUID   string
	bootUUID   string // "" when /boot is not separate
	rootFSType string
	rootVerity bool // ext4 root with the verity feature
	// installed marks a to-filesystem target that already holds a finished
	// install (a re-run after a kill in finalize).
	installed    bool
	bootFSType   string
	bootSeparate bool
	// device is the whole disk, for BIOS boot code; "" for to-filesystem
	// targets where it is unknown.
	device    string
	espDevice string
	// rootKargs are the root-setup kernel arguments (root=, rw, boot=).
	rootKargs     []string
	bootMountSpec string
	skipFinalize  bool
	// rootKargsFrom says where root= and its companions came from
	// (rootKargsFrom* constants), for the plan.
	rootKargsFrom string
	// replace is the --replace mode ("" for an empty target); bootedRoot
	// marks the filesystem the running host booted from; cleanup is
	// to-existing-root's --cleanup.
	replace    string
	bootedRoot bool
	cleanup    bool
}

// targetRef computes the reference recorded for updates.
func targetRef(opts Options) imgref.Ref {
	t := imgref.Ref{Transport: opts.TargetTransport, Name: opts.TargetImgref}
	if t.Transport == "" {
		t.Transport = imgref.Registry
	}
	if t.Name == "" {
		t.Name = opts.Source.Name
	}
	return t
}

// checkImageConfig refuses images that are not bootable or not for this
// machine, before anything is written.
func checkImageConfig(im *fetch.Image) error {
	labels := im.Config.Config.Labels
	_, bootc := labels["containers.bootc"]
	_, ostreeBootable := labels["ostree.bootable"]
	if !bootc && !ostreeBootable {
		return errs.New(errs.Image, "checking image", im.Source.String(),
			errors.New("the image is not bootable: it has neither the containers.bootc nor the ostree.bootable label"),
			"install a bootable container image (built FROM a bootc base image, or labelled containers.bootc=1)")
	}
	if arch := im.Config.Architecture; arch != "" && arch != runtime.GOARCH {
		return errs.New(errs.Image, "checking image", im.Source.String(),
			fmt.Errorf("the image is for architecture %q but this machine is %q", arch, runtime.GOARCH),
			"install an image built for "+runtime.GOARCH)
	}
	return nil
}

// checkKernel requires exactly one kernel in usr/lib/modules/*/vmlinuz.
func checkKernel(kernels []string, src string) (string, error) {
	switch len(kernels) {
	case 1:
		return strings.Split(kernels[0], "/")[3], nil
	case 0:
		return "", errs.New(errs.Image, "checking image", src, errors.New("no kernel found at /usr/lib/modules/*/vmlinuz"),
			"a bootable image must carry its kernel as /usr/lib/modules/$KVER/vmlinuz")
	default:
		return "", errs.New(errs.Image, "checking image", src, fmt.Errorf("%d kernels found (%s)", len(kernels), strings.Join(kernels, ", ")),
			"a bootable image must carry exactly one kernel in /usr/lib/modules")
	}
}

func kernelsIn(root string) ([]string, error) {
	matches, err := filepath.Glob(filepath.Join(root, "usr/lib/modules/*/vmlinuz"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range matches {
		if fi, err := os.Lstat(m); err == nil && fi.Mode().IsRegular() {
			rel, _ := filepath.Rel(root, m)
			out = append(out, rel)
		}
	}
	return out, nil
}

// writebackMin is the file size from which assemble starts writing a file
// to disk right away: the bytes of an image are mostly in such files, and
// the few system calls for them are cheap next to a final sync that would
// otherwise write the whole tree while nothing else happens.
const writebackMin = 256 << 10

// assemble applies the layers into stage, each as soon as pull has it
// verified in the store, checking each layer's diff ID as it goes.
// digest, if not nil, records the files' ostree checksums as they are
// written, for the commit.
func assemble(ctx context.Context, im *fetch.Image, store *fetch.Store, pull *fetch.Pull, stage string, em event.Emitter, digest *ostreecommit.Known) error {
	if err := os.RemoveAll(stage); err != nil {
		return fmt.Errorf("clearing stage %s: %w", stage, err)
	}
	if err := os.MkdirAll(stage, 0o755); err != nil {
		return fmt.Errorf("creating stage %s: %w", stage, err)
	}
	opts := layer.Options{Ostree: true, Writeback: writebackMin, Warn: em.Warn}
	if digest != nil {
		opts.Digest = digest
	}
	ap, err := layer.NewApplier(stage, opts)
	if err != nil {
		return err
	}
	defer ap.Close()
	for i, l := range im.Layers {
		if err := pull.Layer(ctx, i); err != nil {
			return err
		}
		if err := applyBlob(ctx, ap, store, l, em); err != nil {
			return fmt.Errorf("layer %d of %d: %w", i+1, len(im.Layers), err)
		}
	}
	return nil
}

func applyBlob(ctx context.Context, ap *layer.Applier, store *fetch.Store, l fetch.Layer, em event.Emitter) error {
	f, err := store.Open(l.Digest)
	if err != nil {
		return err
	}
	defer f.Close()
	pr := &event.ProgressReader{R: f, Em: em, Item: l.Digest.String(), Total: l.Size}
	return applyStream(ctx, ap, pr, l)
}

// applyStream decompresses a layer, applies it, and verifies its diff ID.
func applyStream(ctx context.Context, ap *layer.Applier, r io.Reader, l fetch.Layer) error {
	dr, err := layer.Decompress(r, l.MediaType)
	if err != nil {
		return errs.New(errs.Image, "decompressing layer", l.Digest.String(), err, "")
	}
	defer dr.Close()
	h := sha256.New()
	if _, err := ap.Apply(ctx, io.TeeReader(dr, h)); err != nil {
		return err
	}
	// Drain what tar did not read (padding) so the hash covers the stream.
	if _, err := io.Copy(h, dr); err != nil {
		return errs.New(errs.Fetch, "reading layer", l.Digest.String(), err, "the blob is corrupt; remove it and fetch again")
	}
	if l.DiffID != "" {
		if got := digest.NewDigest(digest.SHA256, h); got != l.DiffID {
			return errs.New(errs.Fetch, "verifying layer", l.Digest.String(),
				fmt.Errorf("uncompressed content hashes to %s, the config says %s", got, l.DiffID), "the image is corrupt or was tampered with")
		}
	}
	return nil
}

// spaceCheck compares what the install will write with the free space of
// the target, as bootc does, and fails early with numbers.
func spaceCheck(dir string, im *fetch.Image, store *fetch.Store) error {
	var need int64
	for _, l := range im.Layers {
		if !store.Has(l.Digest) {
			need += l.Size
		}
		// The staged tree and the ostree repository each hold the
		// uncompressed content; about 2.5x the compressed size each.
		need += l.Size * 5
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("checking free space of %s: %w", dir, err)
	}
	free := int64(st.Bavail) * st.Bsize
	if free < need {
		return errs.New(errs.Target, "checking free space of", dir,
			fmt.Errorf("%d MiB free, about %d MiB needed", free>>20, need>>20), "use a larger target")
	}
	return nil
}
