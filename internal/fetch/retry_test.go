package fetch

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/event"
	"github.com/bootlace/bootlace/internal/imgref"
	"github.com/bootlace/bootlace/internal/testbed/faultproxy"
	"github.com/bootlace/bootlace/internal/testbed/registry"
	digest "github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/pkg/blobinfocache/memory"
	"go.podman.io/image/v5/types"
)

func TestTransient(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{docker.UnexpectedHTTPStatusError{StatusCode: 500}, true},
		{fmt.Errorf("wrapped: %w", docker.UnexpectedHTTPStatusError{StatusCode: 503}), true},
		{docker.UnexpectedHTTPStatusError{StatusCode: 429}, true},
		{docker.UnexpectedHTTPStatusError{StatusCode: 404}, false},
		{docker.ErrUnauthorizedForCredentials{Err: errors.New("401")}, false},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{io.ErrUnexpectedEOF, true},
		{errStalled{time.Second}, true},
		{fmt.Errorf("%w at 3 of 9", errTruncated), true},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
		{errs.New(errs.Image, "parsing", "", io.ErrUnexpectedEOF, ""), false},
		{errors.New("manifest unknown"), false},
		{nil, false},
	}
	for _, tt := range tests {
		if got := transient(tt.err); got != tt.want {
			t.Errorf("transient(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// flakySource serves one blob and fails attempts as scripted. It has no
// range read, so retries re-read from the start and skip the prefix.
type flakySource struct {
	types.ImageSource
	data     []byte
	attempts int
	script   []step // per attempt; past the end: whole blob
}

// step is one scripted attempt; ctx is the attempt's, as an HTTP body's
// request context would be.
type step func(ctx context.Context, data []byte) (io.ReadCloser, error)

func (f *flakySource) GetBlob(ctx context.Context, _ types.BlobInfo, _ types.BlobInfoCache) (io.ReadCloser, int64, error) {
	i := f.attempts
	f.attempts++
	if i < len(f.script) {
		rc, err := f.script[i](ctx, f.data)
		return rc, int64(len(f.data)), err
	}
	return io.NopCloser(bytes.NewReader(f.data)), int64(len(f.data)), nil
}

// cutReader returns data[:n] then err.
type cutReader struct {
	r   io.Reader
	err error
}

func (c *cutReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err == io.EOF {
		return n, c.err
	}
	return n, err
}

// stallReader returns data[:n] then blocks until its context ends.
type stallReader struct {
	ctx context.Context
	r   io.Reader
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err == io.EOF {
		<-s.ctx.Done()
		return n, s.ctx.Err()
	}
	return n, err
}

func TestBlobReaderRetries(t *testing.T) {
	data := make([]byte, 1<<20)
	rand.Read(data)
	status := func(code int) step {
		return func(context.Context, []byte) (io.ReadCloser, error) {
			return nil, docker.UnexpectedHTTPStatusError{StatusCode: code}
		}
	}
	reset := func(at int) step {
		return func(_ context.Context, d []byte) (io.ReadCloser, error) {
			return io.NopCloser(&cutReader{bytes.NewReader(d[:at]), syscall.ECONNRESET}), nil
		}
	}
	short := func(at int) step {
		return func(_ context.Context, d []byte) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(d[:at])), nil
		}
	}
	tests := []struct {
		name     string
		script   []step
		retries  int
		ok       bool
		attempts int
	}{
		{"clean", nil, 2, true, 1},
		{"two 500s", []step{status(500), status(502)}, 2, true, 3},
		{"500s beyond the budget", []step{status(500), status(500), status(500)}, 2, false, 3},
		{"404 is not retried", []step{status(404)}, 3, false, 1},
		{"resets with progress do not use up the budget", []step{reset(1000), reset(5000), reset(9000), reset(200000)}, 1, true, 5},
		{"truncated body", []step{short(4096)}, 1, true, 2},
		{"stall", []step{func(ctx context.Context, d []byte) (io.ReadCloser, error) {
			return io.NopCloser(&stallReader{ctx, bytes.NewReader(d[:10000])}), nil
		}}, 1, true, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			src := &flakySource{data: data, script: tt.script}
			opts := Options{Retries: tt.retries, RetryBackoff: 5 * time.Millisecond, StallTimeout: 300 * time.Millisecond}
			info := types.BlobInfo{Digest: digest.FromBytes(data), Size: int64(len(data))}
			br := newBlobReader(ctx, src, info, opts, event.Emitter{})
			got, err := io.ReadAll(br)
			br.Close()
			if tt.ok && (err != nil || !bytes.Equal(got, data)) {
				t.Fatalf("read %d bytes, err %v", len(got), err)
			}
			if !tt.ok && err == nil {
				t.Fatal("read succeeded")
			}
			if src.attempts != tt.attempts {
				t.Errorf("%d attempts, want %d", src.attempts, tt.attempts)
			}
		})
	}
}

// proxiedImage pushes a one-layer image with a 3 MiB incompressible layer
// to a loopback registry and puts a fault proxy with rules in front of it.
func proxiedImage(t *testing.T, rules ...faultproxy.Rule) (imgref.Ref, digest.Digest, *faultproxy.Proxy, Options) {
	t.Helper()
	if os.Geteuid() != 0 && testing.Short() {
		t.Skip("loopback registry: skipped with -short")
	}
	payload := make([]byte, 3<<20)
	rand.Read(payload)
	layout, ld := writeLayoutWith(t, map[string]string{"containers.bootc": "1"}, string(payload))
	reg := registry.StartForTest(t)
	if _, err := reg.Push(context.Background(), "oci:"+layout+":latest", "bootlace/faults:latest"); err != nil {
		t.Fatal(err)
	}
	p := faultproxy.StartForTest(t, reg, rules...)
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.json")
	pol, _ := json.Marshal(map[string]any{"default": []any{map[string]string{"type": "insecureAcceptAnything"}}})
	if err := os.WriteFile(policy, pol, 0o644); err != nil {
		t.Fatal(err)
	}
	opts := Options{CertDir: p.CertDir, Creds: reg.User + ":" + reg.Password, SignaturePolicy: policy,
		RegistriesDir: filepath.Join(dir, "registries.d"), Retries: 3, RetryBackoff: 50 * time.Millisecond, StallTimeout: 2 * time.Second}
	src, err := imgref.Parse("docker://" + p.Addr + "/bootlace/faults:latest")
	if err != nil {
		t.Fatal(err)
	}
	return src, ld, p, opts
}

func TestFetchThroughFaults(t *testing.T) {
	src, ld, p, opts := proxiedImage(t,
		faultproxy.Rule{Match: "/manifests/", Kind: faultproxy.Status, Status: 503, Count: 2},
		faultproxy.Rule{Match: "/blobs/", Kind: faultproxy.Status, Status: 500, Count: 2},
		// Three resets in a row at a small offset exhaust containers/image's
		// own reconnection, so fetch's retry has to resume.
		faultproxy.Rule{Match: "/blobs/" + "", Kind: faultproxy.Reset, After: 300 << 10, Count: 3},
		faultproxy.Rule{Match: "/blobs/", Kind: faultproxy.Stall, After: 100 << 10, Stall: time.Minute, Count: 1},
	)
	store, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	im, err := Fetch(context.Background(), src, store, opts)
	if err != nil {
		t.Fatalf("fetch through faults: %v\nrequests: %+v", err, p.Requests())
	}
	t.Logf("fetched in %s through %d injected faults", time.Since(start).Round(time.Millisecond), len(p.Injections()))
	if !store.Has(ld) || len(im.Layers) != 1 {
		t.Fatalf("layer %s not stored", ld)
	}
	kinds := map[faultproxy.Kind]int{}
	for _, in := range p.Injections() {
		kinds[in.Kind]++
	}
	if kinds[faultproxy.Status] != 4 || kinds[faultproxy.Reset] != 3 || kinds[faultproxy.Stall] != 1 {
		t.Errorf("injected %v, want 4 statuses, 3 resets, 1 stall", kinds)
	}
	// A resumed attempt asks for the rest of the layer only.
	resumed := 0
	for _, r := range p.Requests() {
		if strings.Contains(r.Path, ld.Encoded()) && strings.HasPrefix(r.Range, "bytes=") && !strings.HasPrefix(r.Range, "bytes=0-") {
			resumed++
			t.Logf("resumed: Range %s (fault: %q)", r.Range, r.Fault)
		}
	}
	if resumed == 0 {
		t.Errorf("no ranged request resumed the layer: %+v", p.Requests())
	}
	left, _ := filepath.Glob(filepath.Join(store.Dir, "blobs", "sha256", "*.partial*"))
	if len(left) != 0 {
		t.Errorf("partial files left: %v", left)
	}
}

func TestFetchPermanentFault(t *testing.T) {
	src, ld, p, opts := proxiedImage(t, faultproxy.Rule{Match: "/blobs/" + "sha256:", Kind: faultproxy.Status, Status: 500})
	opts.Retries = 2
	store, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, err = Fetch(context.Background(), src, store, opts)
	if errs.KindOf(err) != errs.Fetch || errs.KindOf(err).ExitCode() != 5 {
		t.Fatalf("permanent 500: %v (kind %v)", err, errs.KindOf(err))
	}
	msg := err.Error()
	// The config blob or the layer fails first; either is named.
	if !strings.Contains(msg, "sha256:") || !strings.Contains(msg, p.Addr) || errs.HintOf(err) == "" {
		t.Errorf("message %q (hint %q) must name the blob, the registry and what to do", msg, errs.HintOf(err))
	}
	if store.Has(ld) {
		t.Error("layer stored despite the fault")
	}
	t.Logf("error: %v; hint: %s", err, errs.HintOf(err))
}

func TestFetchNotFoundIsNotRetried(t *testing.T) {
	src, _, p, opts := proxiedImage(t)
	src.Name = strings.Replace(src.Name, ":latest", ":missing", 1)
	opts.RetryBackoff = 2 * time.Second
	store, _ := OpenStore(t.TempDir())
	start := time.Now()
	_, err := Fetch(context.Background(), src, store, opts)
	if errs.KindOf(err) != errs.Fetch {
		t.Fatalf("missing tag: %v", err)
	}
	if el := time.Since(start); el > opts.RetryBackoff {
		t.Errorf("a missing tag took %s: it was retried (%d requests)", el, len(p.Requests()))
	}
}

func TestStreamResumes(t *testing.T) {
	src, ld, p, opts := proxiedImage(t, faultproxy.Rule{Match: "/blobs/", Kind: faultproxy.Reset, After: 64 << 10, Count: 4})
	s, err := Open(context.Background(), src, t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rc, err := s.Stream(context.Background(), s.Image.Layers[0])
	if err != nil {
		t.Fatal(err)
	}
	h := digest.SHA256.Digester()
	if _, err := io.Copy(h.Hash(), rc); err != nil {
		t.Fatalf("streaming through resets: %v\n%+v", err, p.Requests())
	}
	rc.Close()
	if h.Digest() != ld {
		t.Fatalf("streamed %s, want %s", h.Digest(), ld)
	}
}

// TestGetBlobFrom checks that the range read reaches the library's
// GetBlobAt for registry sources, and that sources without one (oci, a
// fake) fall back to skipping.
func TestGetBlobFrom(t *testing.T) {
	src, ld, p, opts := proxiedImage(t)
	s, err := Open(context.Background(), src, t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l := s.Image.Layers[0]
	info := types.BlobInfo{Digest: l.Digest, Size: l.Size}
	whole, _, err := s.isrc.GetBlob(context.Background(), info, memory.New())
	if err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(whole)
	whole.Close()
	if err != nil || digest.FromBytes(all) != ld {
		t.Fatalf("whole blob: %v", err)
	}
	const off = 123457
	rc, ok, err := getBlobFrom(context.Background(), s.isrc, info, off)
	if !ok || err != nil {
		t.Fatalf("docker source: range read ok=%v err=%v", ok, err)
	}
	rest, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(rest, all[off:]) {
		t.Fatalf("range read returned %d bytes (err %v), want %d", len(rest), err, len(all)-off)
	}
	ranged := false
	for _, r := range p.Requests() {
		ranged = ranged || r.Range == fmt.Sprintf("bytes=%d-", off)
	}
	if !ranged {
		t.Errorf("no Range request reached the registry: %+v", p.Requests())
	}

	layout, lld := writeLayoutWith(t, nil, "some payload")
	ls, err := Open(context.Background(), imgref.Ref{Transport: imgref.OCI, Name: layout}, t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	linfo := types.BlobInfo{Digest: lld, Size: ls.Image.Layers[0].Size}
	// containers/image's oci sources have no range read: openAt skips.
	if _, ok, _ := getBlobFrom(context.Background(), ls.isrc, linfo, 10); ok {
		t.Error("oci source claimed a range read")
	}
	actx, wd := startWatchdog(context.Background(), time.Minute)
	rc, err = openAt(actx, ls.isrc, linfo, 10, wd)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(rc); err != nil || int64(len(b)) != linfo.Size-10 {
		t.Errorf("oci read from 10: %d bytes, err %v", len(b), err)
	}
	rc.Close()
	wd.close()

	if _, ok, _ := getBlobFrom(context.Background(), &flakySource{}, info, 1); ok {
		t.Error("a source without GetBlobAt claimed a range read")
	}
}

// TestResumeAcrossRuns interrupts a fetch mid-layer and checks that the
// next run asks the registry only for the rest of the layer.
func TestResumeAcrossRuns(t *testing.T) {
	// The test layer is the only blob over 1 MiB, so the stall can only
	// fire on it.
	src, ld, p, opts := proxiedImage(t, faultproxy.Rule{Match: "/blobs/", Kind: faultproxy.Stall, After: 1 << 20, Stall: time.Minute, Count: 1})
	store, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	opts.StallTimeout = time.Minute // the interruption, not the stall detector, ends run 1
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for len(p.Injections()) == 0 && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond)
		cancel()
	}()
	if _, err := Fetch(ctx, src, store, opts); err == nil {
		t.Fatal("the interrupted fetch succeeded")
	}
	partial := store.Path(ld) + ".partial"
	fi, err := os.Stat(partial)
	if err != nil || fi.Size() == 0 {
		t.Fatalf("no partial layer kept after the interruption: %v", err)
	}
	t.Logf("run 1 left %d bytes", fi.Size())
	if _, err := Fetch(context.Background(), src, store, opts); err != nil {
		t.Fatalf("re-run: %v", err)
	}
	want := fmt.Sprintf("bytes=%d-", fi.Size())
	found := false
	for _, r := range p.Requests() {
		found = found || (strings.Contains(r.Path, ld.Encoded()) && r.Range == want)
	}
	if !found {
		t.Errorf("the re-run did not ask for %s: %+v", want, p.Requests())
	}
	if _, err := os.Stat(partial); !os.IsNotExist(err) {
		t.Errorf("partial file still there after the re-run: %v", err)
	}
}

// TestPartialFromEarlierRun covers partial files on a source without range
// reads: a correct prefix is continued, a wrong one is thrown away.
func TestPartialFromEarlierRun(t *testing.T) {
	layout, ld := writeLayoutWith(t, nil, strings.Repeat("payload ", 5000))
	blob, err := os.ReadFile(filepath.Join(layout, "blobs", "sha256", ld.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		partial []byte
	}{
		{"correct prefix", blob[:len(blob)/2]},
		{"foreign bytes", bytes.Repeat([]byte{0xee}, len(blob)/2)},
		{"longer than the blob", append(append([]byte(nil), blob...), 1, 2, 3)},
		{"whole blob", blob},
	} {
		t.Run(tt.name, func(t *testing.T) {
			store, err := OpenStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			partial := store.Path(ld) + ".partial"
			if err := os.WriteFile(partial, tt.partial, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Fetch(context.Background(), imgref.Ref{Transport: imgref.OCI, Name: layout}, store, Options{}); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(store.Path(ld))
			if err != nil || !bytes.Equal(got, blob) {
				t.Fatalf("stored blob differs (err %v)", err)
			}
			if _, err := os.Stat(partial); !os.IsNotExist(err) {
				t.Errorf("partial file left: %v", err)
			}
		})
	}
}
