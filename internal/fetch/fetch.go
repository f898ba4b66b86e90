// Package fetch pulls an image's manifest, config and layer blobs with
// containers/image into a blob store on the target filesystem. Every blob is
// hashed while it streams and lands under its digest only when the digest
// matches, so a re-run reuses what an earlier run verified.
//
// Registry faults: every request is retried with exponential backoff
// (Options.Retries, RetryBackoff) while its failure is transient: 5xx, 408,
// 429, reset or refused connections, unexpected EOF, timeouts, and stalls
// (no byte for Options.StallTimeout, watched per attempt). Authentication,
// "not found", signature and malformed-image errors fail at once. The retry
// budget counts consecutive attempts without progress, so a blob that keeps
// moving forward is never given up on; the final error is an errs.Fetch
// naming the blob and the image.
//
// Resume: a blob is written to <digest>.partial in the store and only
// renamed to its digest once the whole content hashes to it. An attempt after
// a failure continues at the bytes already written. containers/image's docker
// source reconnects with a Range request for some mid-body failures on its
// own; when it gives up, fetch asks the source for the rest of the blob
// through its byte-range read (GetBlobAt, reached as described at
// getBlobFrom). Sources without a range read (local oci, oci-archive,
// containers-storage) are read again from the start with the prefix
// skipped: that costs reading the prefix again, never rewriting or trusting
// it. A partial file outlives an interrupted or failed run, so a re-run
// continues it too. Its bytes are then hashed again from disk rather than
// restored from a saved hash state, because the digest must cover the bytes
// actually stored; if the finished blob does not verify, the partial file is
// deleted and the blob fetched once more from zero.
package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/event"
	"github.com/bootlace/bootlace/internal/imgref"
	digest "github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/image"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/transports/alltransports"
	"go.podman.io/image/v5/types"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// Options configure registry access and trust, with the containers tools'
// conventions.
type Options struct {
	AuthFile string
	CertDir  string
	// TLSVerify false disables TLS verification for registries.
	TLSVerify *bool
	// Creds is "USER[:PASSWORD]" for the source registry.
	Creds string
	// SignaturePolicy is a policy.json path; empty means the host default
	// (/etc/containers/policy.json), or accept-anything with a warning when
	// the host has none.
	SignaturePolicy string
	// EnforceSigPolicy refuses a policy whose default is insecureAcceptAnything.
	EnforceSigPolicy bool
	// RegistriesDir is a registries.d directory (lookaside and
	// use-sigstore-attachments settings for signatures); empty means the
	// host's /etc/containers/registries.d.
	RegistriesDir string
	// RegistriesConf is a registries.conf file (mirrors, blocked and
	// insecure registries); empty means the host's, or the file the
	// CONTAINERS_REGISTRIES_CONF environment variable names.
	RegistriesConf string
	// Parallel bounds concurrent blob downloads (default 3).
	Parallel int
	// Retries is how many consecutive failed attempts without progress are
	// retried for each request (default DefaultRetries).
	Retries int
	// RetryBackoff is the first wait before a retry; it doubles up to 30 s
	// (default DefaultBackoff).
	RetryBackoff time.Duration
	// StallTimeout aborts and retries an attempt that received nothing for
	// this long (default DefaultStallTimeout).
	StallTimeout time.Duration
	Events       event.Sink
}

// Layer is one layer blob as the manifest lists it, with its diff ID.
type Layer struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	Size      int64         `json:"size"`
	DiffID    digest.Digest `json:"diffID"`
}

// Image is a fetched, verified image in the store.
type Image struct {
	Source         imgref.Ref
	ManifestDigest digest.Digest
	// Manifest and ConfigJSON are the exact bytes the source served.
	Manifest     []byte
	ManifestType string
	ConfigJSON   []byte
	Config       *imgspecv1.Image
	Layers       []Layer
	Store        *Store
}

// SystemContext builds the containers/image context for opts. cacheDir keeps
// containers/image's blob-info cache off the host's /var/lib/containers.
func SystemContext(opts Options, cacheDir string) (*types.SystemContext, error) {
	sys := &types.SystemContext{
		AuthFilePath:     opts.AuthFile,
		DockerCertPath:   opts.CertDir,
		BlobInfoCacheDir: cacheDir,
		// Archives (oci-archive:, docker-archive:) are unpacked here too, so
		// the caller's scratch directory holds everything a run leaves.
		BigFilesTemporaryDir: cacheDir,
		OCICertPath:          opts.CertDir,
		RegistriesDirPath:    opts.RegistriesDir,
	}
	if opts.RegistriesConf != "" {
		sys.SystemRegistriesConfPath = opts.RegistriesConf
	}
	if opts.TLSVerify != nil {
		sys.DockerInsecureSkipTLSVerify = types.NewOptionalBool(!*opts.TLSVerify)
		sys.OCIInsecureSkipTLSVerify = !*opts.TLSVerify
	}
	if opts.Creds != "" {
		user, pass, _ := strings.Cut(opts.Creds, ":")
		if user == "" {
			return nil, errs.New(errs.Usage, "parsing --creds", "", errors.New("empty user name"), "pass --creds USER:PASSWORD")
		}
		sys.DockerAuthConfig = &types.DockerAuthConfig{Username: user, Password: pass}
	}
	return sys, nil
}

// PolicyContext loads the signature policy. It returns a warning text when
// no policy exists and everything is accepted.
func PolicyContext(opts Options) (*signature.PolicyContext, string, error) {
	var (
		policy *signature.Policy
		err    error
		warn   string
	)
	path := opts.SignaturePolicy
	if path == "" {
		path = "/etc/containers/policy.json"
		if _, statErr := os.Stat(path); errors.Is(statErr, os.ErrNotExist) {
			if opts.EnforceSigPolicy {
				return nil, "", errs.New(errs.Fetch, "loading signature policy", path, statErr, "--enforce-container-sigpolicy needs a policy: pass --signature-policy FILE")
			}
			policy = &signature.Policy{Default: signature.PolicyRequirements{signature.NewPRInsecureAcceptAnything()}}
			warn = "no signature policy at /etc/containers/policy.json: accepting any image (pass --signature-policy to verify signatures)"
		}
	}
	if policy == nil {
		policy, err = signature.NewPolicyFromFile(path)
		if err != nil {
			return nil, "", errs.New(errs.Fetch, "loading signature policy", path, err, "fix the policy file or pass --signature-policy FILE")
		}
	}
	if opts.EnforceSigPolicy {
		for _, req := range policy.Default {
			if isAcceptAnything(req) {
				return nil, "", errs.New(errs.Fetch, "checking signature policy", path, errors.New("default policy is insecureAcceptAnything"), "--enforce-container-sigpolicy requires a policy that verifies signatures")
			}
		}
	}
	pc, err := signature.NewPolicyContext(policy)
	if err != nil {
		return nil, "", errs.New(errs.Fetch, "creating signature policy context", path, err, "")
	}
	return pc, warn, nil
}

// isAcceptAnything detects the insecureAcceptAnything requirement through its
// JSON form, the only stable view the library offers of a requirement's type.
func isAcceptAnything(req signature.PolicyRequirement) bool {
	b, err := json.Marshal(req)
	if err != nil {
		return false
	}
	var t struct {
		Type string `json:"type"`
	}
	return json.Unmarshal(b, &t) == nil && t.Type == "insecureAcceptAnything"
}

// Source is an opened, resolved and policy-checked image source.
type Source struct {
	Image *Image
	sys   *types.SystemContext
	isrc  types.ImageSource
	opts  Options
	em    event.Emitter
}

// Open resolves src (choosing this machine's instance from a manifest list),
// checks it against the signature policy and reads its manifest and config.
// cacheDir keeps containers/image's blob-info cache off the host's
// /var/lib/containers. Close the Source when done.
func Open(ctx context.Context, src imgref.Ref, cacheDir string, opts Options) (_ *Source, retErr error) {
	em := event.Emitter{Sink: opts.Events, Phase: "fetch"}
	sys, err := SystemContext(opts, cacheDir)
	if err != nil {
		return nil, err
	}
	ref, err := alltransports.ParseImageName(src.String())
	if err != nil {
		return nil, errs.New(errs.Usage, "parsing image reference", src.String(), err, "use TRANSPORT:NAME, e.g. docker://quay.io/example/os:latest")
	}
	pc, warn, err := PolicyContext(opts)
	if err != nil {
		return nil, err
	}
	defer func() { _ = pc.Destroy() }()
	if warn != "" {
		em.Warn(warn)
	}

	name := src.String()
	var isrc types.ImageSource
	// NewImageSource keeps no context, so its attempts may have deadlines.
	err = withRetry(ctx, opts, em, "image "+name, func(actx context.Context) (err error) {
		isrc, err = ref.NewImageSource(actx, sys)
		return err
	})
	if err != nil {
		return nil, fetchErr("opening image", name, err, src)
	}
	defer func() {
		if retErr != nil {
			isrc.Close()
		}
	}()

	top := image.UnparsedInstance(isrc, nil)
	var topManifest []byte
	var topType string
	err = withRetry(ctx, opts, em, "the manifest of "+name, func(actx context.Context) (err error) {
		topManifest, topType, err = top.Manifest(actx)
		return err
	})
	if err != nil {
		return nil, fetchErr("reading manifest of", name, err, src)
	}
	// Not retried: a rejection is final, and a signature that cannot be
	// fetched must not turn into an accepted image.
	if ok, err := pc.IsRunningImageAllowed(ctx, top); !ok || err != nil {
		return nil, errs.New(errs.Fetch, "verifying signatures of", name, err, "the signature policy rejects this image; sign it or adjust --signature-policy")
	}
	unparsed := top
	manBytes, manType := topManifest, topType
	if manifest.MIMETypeIsMultiImage(topType) {
		list, err := manifest.ListFromBlob(topManifest, topType)
		if err != nil {
			return nil, errs.New(errs.Image, "parsing manifest list of", name, err, "")
		}
		inst, err := list.ChooseInstance(sys)
		if err != nil {
			return nil, errs.New(errs.Image, "choosing the image for this machine from", name, err, "the image has no variant for this architecture")
		}
		unparsed = image.UnparsedInstance(isrc, &inst)
		err = withRetry(ctx, opts, em, "the manifest of "+name, func(actx context.Context) (err error) {
			manBytes, manType, err = unparsed.Manifest(actx)
			return err
		})
		if err != nil {
			return nil, fetchErr("reading manifest of", name, err, src)
		}
	}
	img, err := image.FromUnparsedImage(ctx, sys, unparsed)
	if err != nil {
		return nil, errs.New(errs.Image, "parsing image", name, err, "")
	}
	mdigest, err := manifest.Digest(manBytes)
	if err != nil {
		return nil, errs.New(errs.Image, "hashing manifest of", name, err, "")
	}
	var configJSON []byte
	err = withRetry(ctx, opts, em, "the config of "+name, func(actx context.Context) (err error) {
		configJSON, err = img.ConfigBlob(actx)
		return err
	})
	if err != nil {
		return nil, blobErr(err, img.ConfigInfo().Digest, src)
	}
	var cfg imgspecv1.Image
	if err := json.Unmarshal(configJSON, &cfg); err != nil {
		return nil, errs.New(errs.Image, "parsing config of", src.String(), err, "")
	}
	infos, err := img.LayerInfosForCopy(ctx)
	if err != nil {
		return nil, fetchErr("listing layers of", name, err, src)
	}
	if infos == nil {
		infos = img.LayerInfos()
	}
	if len(infos) != len(cfg.RootFS.DiffIDs) {
		return nil, errs.New(errs.Image, "checking image", src.String(),
			fmt.Errorf("manifest lists %d layers but the config has %d diff IDs", len(infos), len(cfg.RootFS.DiffIDs)), "the image is malformed; rebuild it")
	}
	out := &Image{Source: src, ManifestDigest: mdigest, Manifest: manBytes, ManifestType: manType,
		ConfigJSON: configJSON, Config: &cfg}
	for i, li := range infos {
		if li.Digest == "" {
			return nil, errs.New(errs.Image, "checking image", src.String(), fmt.Errorf("layer %d has no digest", i), "")
		}
		out.Layers = append(out.Layers, Layer{Digest: li.Digest, MediaType: li.MediaType, Size: li.Size, DiffID: cfg.RootFS.DiffIDs[i]})
	}
	return &Source{Image: out, sys: sys, isrc: isrc, opts: opts, em: em}, nil
}

// Close releases the source.
func (s *Source) Close() error { return s.isrc.Close() }

// Download fetches every layer blob into store (in parallel, reusing
// verified blobs) and records the image there.
func (s *Source) Download(ctx context.Context, store *Store) (*Image, error) {
	return s.Start(ctx, store).Wait()
}

// Pull is a download in progress: layers arrive in parallel, and a caller
// can apply layer i as soon as it is verified in the store while later
// layers are still on the wire.
type Pull struct {
	ready []chan struct{}
	done  chan struct{}
	im    *Image
	err   error
}

// Start begins fetching every layer blob into store in the background.
// Blobs are requested in layer order, at most Options.Parallel at once, so
// the first layers (the ones needed first) arrive first.
func (s *Source) Start(ctx context.Context, store *Store) *Pull {
	par := s.opts.Parallel
	if par <= 0 {
		par = 3
	}
	p := &Pull{ready: make([]chan struct{}, len(s.Image.Layers)), done: make(chan struct{})}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(par)
	for i, l := range s.Image.Layers {
		p.ready[i] = make(chan struct{})
		// Announce every layer, so progress totals are known from the start.
		s.em.Progress(l.Digest.String(), 0, l.Size)
	}
	go func() {
		defer close(p.done)
		for i, l := range s.Image.Layers {
			info := types.BlobInfo{Digest: l.Digest, Size: l.Size, MediaType: l.MediaType}
			// Go blocks while par fetches run; stop queueing once one failed.
			if gctx.Err() != nil {
				break
			}
			g.Go(func() error {
				if err := fetchBlob(gctx, s.isrc, s.Image.Source, info, store, s.opts, s.em); err != nil {
					return err
				}
				close(p.ready[i])
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			p.err = err
			return
		}
		if err := ctx.Err(); err != nil {
			p.err = err
			return
		}
		im := *s.Image
		im.Store = store
		if err := store.WriteMeta(&im); err != nil {
			p.err = err
			return
		}
		p.im = &im
	}()
	return p
}

// Layer waits until layer i is verified in the store. It returns the
// pull's error if the pull fails first.
func (p *Pull) Layer(ctx context.Context, i int) error {
	if i < 0 || i >= len(p.ready) {
		return fmt.Errorf("layer %d out of range (the image has %d)", i, len(p.ready))
	}
	select {
	case <-p.ready[i]:
		return nil
	case <-p.done:
		select {
		case <-p.ready[i]:
			return nil
		default:
		}
		if p.err != nil {
			return p.err
		}
		return fmt.Errorf("layer %d was not fetched", i)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Wait waits for every layer and returns the image, backed by the store.
func (p *Pull) Wait() (*Image, error) {
	<-p.done
	return p.im, p.err
}

// Stream returns layer l's blob straight from the source, without storing
// it. The reader fails at EOF when the content does not match the digest,
// so callers must not trust what they read before that.
func (s *Source) Stream(ctx context.Context, l Layer) (io.ReadCloser, error) {
	info := types.BlobInfo{Digest: l.Digest, Size: l.Size, MediaType: l.MediaType}
	br := newBlobReader(ctx, s.isrc, info, s.opts, s.em)
	// Fail here, not at the first Read, when the source cannot serve the blob.
	var first [1]byte
	n, err := io.ReadFull(br, first[:])
	if err != nil && !(l.Size == 0 && err == io.EOF) {
		br.Close()
		return nil, blobErr(err, l.Digest, s.Image.Source)
	}
	rest := &blobErrReader{r: br, d: l.Digest, src: s.Image.Source}
	return &verifyingReader{rc: readCloser{io.MultiReader(bytes.NewReader(first[:n]), rest), br}, h: sha256.New(), want: l.Digest}, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// blobErrReader classifies a read failure as a fetch error naming the blob.
type blobErrReader struct {
	r   io.Reader
	d   digest.Digest
	src imgref.Ref
}

func (b *blobErrReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = blobErr(err, b.d, b.src)
	}
	return n, err
}

type verifyingReader struct {
	rc   io.ReadCloser
	h    hash.Hash
	want digest.Digest
}

func (v *verifyingReader) Read(b []byte) (int, error) {
	n, err := v.rc.Read(b)
	v.h.Write(b[:n])
	if err == io.EOF {
		if got := digest.NewDigest(digest.SHA256, v.h); got != v.want {
			return n, errs.New(errs.Fetch, "verifying blob", v.want.String(), fmt.Errorf("content hashes to %s", got), "the source is corrupt or was tampered with")
		}
	}
	return n, err
}

func (v *verifyingReader) Close() error { return v.rc.Close() }

// Fetch opens src and downloads it into store.
func Fetch(ctx context.Context, src imgref.Ref, store *Store, opts Options) (*Image, error) {
	s, err := Open(ctx, src, store.CacheDir(), opts)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.Download(ctx, store)
}

func fetchHint(src imgref.Ref) string {
	switch src.Transport {
	case imgref.Registry:
		return "check the image name, network, --authfile/--creds and --cert-dir/--tls-verify"
	case imgref.ContainersStorage:
		return "check that the image is in the local containers storage"
	default:
		return "check that the path exists and holds an image"
	}
}

// fetchErr classifies a failed request for something other than a blob.
func fetchErr(op, name string, err error, src imgref.Ref) error {
	if k := errs.KindOf(err); k == errs.Image || k == errs.Usage || k == errs.Fetch {
		return err
	}
	hint := fetchHint(src)
	if transient(err) {
		hint = "the registry kept failing: check the network and the registry, then run the same command again"
	}
	return errs.New(errs.Fetch, op, name, err, hint)
}

// blobErr is the final error for a blob that could not be fetched.
func blobErr(err error, d digest.Digest, src imgref.Ref) error {
	if k := errs.KindOf(err); k == errs.Image || k == errs.Usage || k == errs.Fetch {
		return err
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	hint := fetchHint(src)
	if transient(err) {
		hint = "the registry kept failing: check the network and the registry, then run the same command again (blobs already verified are reused)"
	}
	return errs.New(errs.Fetch, "fetching blob", d.String(), fmt.Errorf("from %s: %w", src.String(), err), hint)
}

// fetchBlob downloads one blob into the store unless it is already there.
// Transient failures are retried inside the blob reader, which continues
// where the partial file ends, including one an earlier run left.
func fetchBlob(ctx context.Context, isrc types.ImageSource, src imgref.Ref, info types.BlobInfo, store *Store, opts Options, em event.Emitter) error {
	if store.Has(info.Digest) {
		em.Progress(info.Digest.String(), info.Size, info.Size)
		return nil
	}
	err := fetchBlobOnce(ctx, isrc, src, info, store, opts, em, true)
	if errors.Is(err, errStalePartial) {
		// The partial file did not belong to this blob after all; its bytes
		// are gone now, so this attempt starts from zero.
		em.Warn(fmt.Sprintf("the partial download of %s from an earlier run did not verify; fetching it again", info.Digest))
		err = fetchBlobOnce(ctx, isrc, src, info, store, opts, em, false)
	}
	return err
}

// errStalePartial marks a digest mismatch of a blob continued from an
// earlier run's partial file.
var errStalePartial = errors.New("stale partial blob")

func fetchBlobOnce(ctx context.Context, isrc types.ImageSource, src imgref.Ref, info types.BlobInfo, store *Store, opts Options, em event.Emitter, reuse bool) error {
	w, err := store.Resume(info.Digest)
	if err != nil {
		return err
	}
	defer w.Abort()
	if !reuse || (info.Size > 0 && w.Offset() > info.Size) {
		if err := w.Reset(); err != nil {
			return err
		}
	}
	resumed := w.Offset()
	if resumed > 0 {
		em.Info(fmt.Sprintf("continuing %s at byte %d of %d from an earlier run", info.Digest, resumed, info.Size))
	}
	br := newBlobReader(ctx, isrc, info, opts, em)
	br.off = resumed
	defer br.Close()
	pr := &event.ProgressReader{R: br, Em: em, Item: info.Digest.String(), Total: info.Size, Done: resumed}
	if info.Size <= 0 || resumed < info.Size {
		if _, err := io.Copy(w, pr); err != nil {
			return blobErr(err, info.Digest, src)
		}
	}
	em.Progress(info.Digest.String(), pr.Done, info.Size)
	if info.Size > 0 && pr.Done != info.Size {
		return errs.New(errs.Fetch, "verifying blob", info.Digest.String(), fmt.Errorf("got %d bytes, expected %d", pr.Done, info.Size), "the source is corrupt or the transfer was cut")
	}
	if err := w.Commit(); err != nil {
		if resumed > 0 && errs.KindOf(err) == errs.Fetch {
			return fmt.Errorf("%w: %w", errStalePartial, err)
		}
		return err
	}
	return nil
}

// Store is a content-addressed blob store in a directory on the target.
type Store struct {
	Dir string
}

// OpenStore creates (if needed) and returns the store at dir.
func OpenStore(dir string) (*Store, error) {
	for _, d := range []string{filepath.Join(dir, "blobs", "sha256"), filepath.Join(dir, "cache")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("creating blob store %s: %w", d, err)
		}
	}
	return &Store{Dir: dir}, nil
}

// CacheDir is where containers/image keeps its blob-info cache.
func (s *Store) CacheDir() string { return filepath.Join(s.Dir, "cache") }

// Path is the file holding the verified blob d.
func (s *Store) Path(d digest.Digest) string {
	return filepath.Join(s.Dir, "blobs", d.Algorithm().String(), d.Encoded())
}

// Has reports whether a verified copy of d is in the store.
func (s *Store) Has(d digest.Digest) bool {
	if d.Validate() != nil {
		return false
	}
	_, err := os.Stat(s.Path(d))
	return err == nil
}

// Open opens the verified blob d.
func (s *Store) Open(d digest.Digest) (*os.File, error) {
	if err := d.Validate(); err != nil {
		return nil, errs.New(errs.Image, "opening blob", d.String(), err, "")
	}
	f, err := os.Open(s.Path(d))
	if err != nil {
		return nil, fmt.Errorf("opening blob %s: %w", d, err)
	}
	return f, nil
}

// BlobWriter writes a blob to a partial file and moves it under its digest
// once the content hashes to it.
type BlobWriter struct {
	f      *os.File
	h      hash.Hash
	want   digest.Digest
	final  string
	off    int64 // bytes already in the file when the writer was made
	keep   bool  // a resumable <digest>.partial: Abort keeps it for a re-run
	closed bool
}

func checkDigest(d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return errs.New(errs.Image, "checking blob digest", d.String(), err, "")
	}
	if d.Algorithm() != digest.SHA256 {
		return errs.New(errs.Image, "checking blob digest", d.String(), errors.New("only sha256 digests are supported"), "")
	}
	return nil
}

// Create starts writing blob d to a private temporary file.
func (s *Store) Create(d digest.Digest) (*BlobWriter, error) {
	if err := checkDigest(d); err != nil {
		return nil, err
	}
	final := s.Path(d)
	f, err := os.CreateTemp(filepath.Dir(final), d.Encoded()+".partial-*")
	if err != nil {
		return nil, fmt.Errorf("creating blob file for %s: %w", d, err)
	}
	return &BlobWriter{f: f, h: sha256.New(), want: d, final: final}, nil
}

// Resume starts writing blob d into <digest>.partial, continuing what an
// interrupted run left there. Those bytes are hashed again from the file,
// never taken on trust from saved state, and Commit still checks the whole
// digest. When another writer holds the partial file (a layer listed twice),
// Resume falls back to Create.
func (s *Store) Resume(d digest.Digest) (*BlobWriter, error) {
	if err := checkDigest(d); err != nil {
		return nil, err
	}
	final := s.Path(d)
	p := final + ".partial"
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening partial blob %s: %w", p, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return s.Create(d)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("reading partial blob %s: %w", p, err)
	}
	return &BlobWriter{f: f, h: h, want: d, final: final, off: n, keep: true}, nil
}

// Offset is how many bytes of the blob the writer already holds.
func (w *BlobWriter) Offset() int64 { return w.off }

// Reset drops the bytes written so far, for a partial file the source
// disagrees with.
func (w *BlobWriter) Reset() error {
	if err := w.f.Truncate(0); err != nil {
		return fmt.Errorf("truncating partial blob %s: %w", w.f.Name(), err)
	}
	if _, err := w.f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("rewinding partial blob %s: %w", w.f.Name(), err)
	}
	w.h.Reset()
	w.off = 0
	return nil
}

func (w *BlobWriter) Write(b []byte) (int, error) {
	w.h.Write(b)
	return w.f.Write(b)
}

// Commit verifies the digest and publishes the blob. On a mismatch the
// partial content is deleted, so no re-run builds on it.
func (w *BlobWriter) Commit() error {
	got := digest.NewDigest(digest.SHA256, w.h)
	if got != w.want {
		w.closed = true
		_ = w.f.Close()
		_ = os.Remove(w.f.Name())
		return errs.New(errs.Fetch, "verifying blob", w.want.String(), fmt.Errorf("content hashes to %s", got), "the source is corrupt or was tampered with")
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("writing blob %s: %w", w.want, err)
	}
	w.closed = true
	if err := os.Rename(w.f.Name(), w.final); err != nil {
		_ = os.Remove(w.f.Name())
		return fmt.Errorf("storing blob %s: %w", w.want, err)
	}
	return nil
}

// Abort ends an uncommitted blob: a resumable partial file with data stays
// for the next run, anything else is removed. It is a no-op after Commit.
func (w *BlobWriter) Abort() {
	if w.closed {
		return
	}
	w.closed = true
	if w.keep {
		if fi, err := w.f.Stat(); err == nil && fi.Size() > 0 {
			_ = w.f.Close()
			return
		}
	}
	_ = w.f.Close()
	_ = os.Remove(w.f.Name())
}

type meta struct {
	Source         string        `json:"source"`
	ManifestDigest digest.Digest `json:"manifestDigest"`
	ManifestType   string        `json:"manifestType"`
	Layers         []Layer       `json:"layers"`
}

// WriteMeta records the image's manifest and config next to its blobs, so
// the image can be reopened without the source (bootlace fetch, re-runs).
func (s *Store) WriteMeta(im *Image) error {
	files := map[string][]byte{"manifest.json": im.Manifest, "config.json": im.ConfigJSON}
	m, err := json.MarshalIndent(meta{Source: im.Source.String(), ManifestDigest: im.ManifestDigest, ManifestType: im.ManifestType, Layers: im.Layers}, "", "  ")
	if err != nil {
		return err
	}
	files["image.json"] = m
	for name, data := range files {
		p := filepath.Join(s.Dir, name)
		if err := os.WriteFile(p+".tmp", data, 0o600); err != nil {
			return fmt.Errorf("writing %s: %w", p, err)
		}
		if err := os.Rename(p+".tmp", p); err != nil {
			return fmt.Errorf("writing %s: %w", p, err)
		}
	}
	return nil
}

// LoadImage reopens an image recorded by WriteMeta, checking that every blob
// is present.
func (s *Store) LoadImage() (*Image, error) {
	var m meta
	raw, err := os.ReadFile(filepath.Join(s.Dir, "image.json"))
	if err != nil {
		return nil, fmt.Errorf("reading fetched image in %s: %w", s.Dir, err)
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("parsing %s/image.json: %w", s.Dir, err)
	}
	im := &Image{ManifestDigest: m.ManifestDigest, ManifestType: m.ManifestType, Layers: m.Layers, Store: s}
	if im.Source, err = imgref.Parse(m.Source); err != nil {
		return nil, err
	}
	if im.Manifest, err = os.ReadFile(filepath.Join(s.Dir, "manifest.json")); err != nil {
		return nil, fmt.Errorf("reading fetched manifest: %w", err)
	}
	if got, err := manifest.Digest(im.Manifest); err != nil || got != im.ManifestDigest {
		return nil, errs.New(errs.Fetch, "verifying stored manifest", s.Dir, fmt.Errorf("digest %s, expected %s", got, im.ManifestDigest), "remove the store and fetch again")
	}
	if im.ConfigJSON, err = os.ReadFile(filepath.Join(s.Dir, "config.json")); err != nil {
		return nil, fmt.Errorf("reading fetched config: %w", err)
	}
	var cfg imgspecv1.Image
	if err := json.Unmarshal(im.ConfigJSON, &cfg); err != nil {
		return nil, fmt.Errorf("parsing fetched config: %w", err)
	}
	im.Config = &cfg
	for _, l := range im.Layers {
		if !s.Has(l.Digest) {
			return nil, errs.New(errs.Fetch, "opening fetched image", s.Dir, fmt.Errorf("layer %s is missing", l.Digest), "fetch the image again")
		}
	}
	return im, nil
}
