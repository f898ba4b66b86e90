package boundimage

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/event"
	"github.com/bootlace/bootlace/internal/fetch"
	"github.com/bootlace/bootlace/internal/testbed/registry"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"
	istorage "go.podman.io/image/v5/storage"
	"go.podman.io/storage"
	"go.podman.io/storage/pkg/reexec"
	stypes "go.podman.io/storage/types"
)

func TestMain(m *testing.M) {
	// containers/storage re-executes the test binary for some operations.
	if reexec.Init() {
		return
	}
	os.Exit(m.Run())
}

func requireIntegration(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration: loopback registry and containers-storage; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("containers-storage layers keep file owners, which needs root")
	}
}

// ociLayout writes a one-layer image holding /hello (with content) as an
// OCI layout and returns its reference.
func ociLayout(t *testing.T, content string) string {
	t.Helper()
	dir := t.TempDir()
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	tw.WriteHeader(&tar.Header{Name: "hello", Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg})
	tw.Write([]byte(content))
	tw.Close()
	blob := func(data []byte) (string, int) {
		sum := sha256.Sum256(data)
		d := hex.EncodeToString(sum[:])
		os.MkdirAll(filepath.Join(dir, "blobs/sha256"), 0o755)
		if err := os.WriteFile(filepath.Join(dir, "blobs/sha256", d), data, 0o644); err != nil {
			t.Fatal(err)
		}
		return "sha256:" + d, len(data)
	}
	ld, ls := blob(layer.Bytes())
	cfg := fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[%q]}}`, ld)
	cd, cs := blob([]byte(cfg))
	man := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d}]}`, cd, cs, ld, ls)
	md, ms := blob([]byte(man))
	idx := fmt.Sprintf(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":%d,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}`, md, ms)
	os.WriteFile(filepath.Join(dir, "index.json"), []byte(idx), 0o644)
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	return "oci:" + dir + ":latest"
}

// served pushes two images to a loopback registry and returns the fetch
// options that reach them under the names example.invalid/bl/{one,two}
// through a registries.conf mirror, with the pushed digests.
func served(t *testing.T) (fetch.Options, map[string]string) {
	t.Helper()
	reg := registry.StartForTest(t)
	digests := map[string]string{}
	for _, n := range []string{"one", "two"} {
		d, err := reg.Push(context.Background(), ociLayout(t, "image "+n), "bl/"+n+":latest")
		if err != nil {
			t.Fatal(err)
		}
		digests["example.invalid/bl/"+n+":latest"] = d
	}
	conf := filepath.Join(t.TempDir(), "registries.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("[[registry]]\nlocation = \"example.invalid/bl\"\n[[registry.mirror]]\nlocation = \"%s/bl\"\n", reg.Addr)), 0o644)
	policy := filepath.Join(t.TempDir(), "policy.json")
	os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644)
	return fetch.Options{CertDir: reg.CertDir, AuthFile: reg.AuthFile, RegistriesConf: conf, SignaturePolicy: policy,
		RegistriesDir: t.TempDir()}, digests
}

var decls = []Image{
	{Ref: "example.invalid/bl/one", Decl: "/usr/lib/bootc/bound-images.d/one.image"},
	{Ref: "example.invalid/bl/two:latest", Decl: "/usr/lib/bootc/bound-images.d/two.container"},
}

// mountsUnder lists the mounts at or below dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}

func TestInstallPull(t *testing.T) {
	requireIntegration(t)
	fo, digests := served(t)
	phys, tree := t.TempDir(), t.TempDir()
	var rec event.Recorder
	opts := Options{Mode: Pull, Fetch: fo, ScratchDir: filepath.Join(t.TempDir(), "s"), TempDir: filepath.Join(phys, "tmp")}
	res, err := Install(context.Background(), phys, tree, decls, opts, event.Emitter{Sink: &rec, Phase: "bound-images"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 {
		t.Fatalf("results %+v", res)
	}
	for _, r := range res {
		if r.Digest != digests[r.Image] || r.From != "registry" || !strings.HasPrefix(r.ID, "sha256:") {
			t.Errorf("result %+v, want digest %s", r, digests[r.Image])
		}
	}
	if m := mountsUnder(t, phys); len(m) != 0 {
		t.Errorf("mounts left under the target: %v", m)
	}
	last := map[string]event.Event{}
	for _, e := range rec.Events() {
		if e.Type == event.Message {
			t.Log(e.Msg) // the store's creation and each copy, with their durations
		}
		if e.Type == event.Progress {
			if p, ok := last[e.Item]; ok && e.Done < p.Done {
				t.Errorf("progress of %s went back from %d to %d", e.Item, p.Done, e.Done)
			}
			last[e.Item] = e
		}
	}
	for name := range digests {
		if e := last[name]; e.Total == 0 || e.Done != e.Total {
			t.Errorf("last progress of %s: %+v", name, e)
		}
	}
	// The store holds both, as containers-storage reads them.
	s, err := storage.GetStore(stypes.StoreOptions{GraphRoot: filepath.Join(phys, StorePath), RunRoot: t.TempDir(), GraphDriverName: "overlay",
		GraphDriverOptions: []string{"overlay.skip_mount_home=true"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(true)
	for name, d := range digests {
		img, err := s.Image(name)
		if err != nil {
			t.Fatalf("%s not in the store: %v", name, err)
		}
		if img.Digest.String() != d {
			t.Errorf("%s: stored digest %s, want %s", name, img.Digest, d)
		}
	}

	// A re-run (after a kill) finds everything in place and copies nothing.
	if _, err := Install(context.Background(), phys, tree, decls, opts, event.Emitter{}); err != nil {
		t.Fatalf("second run: %v", err)
	}
}

func TestInstallStored(t *testing.T) {
	requireIntegration(t)
	fo, digests := served(t)
	host := t.TempDir()
	conf := filepath.Join(host, "storage.conf")
	hostOpts := stypes.StoreOptions{GraphRoot: filepath.Join(host, "graph"), RunRoot: filepath.Join(host, "run"), GraphDriverName: "vfs"}
	os.WriteFile(conf, []byte(fmt.Sprintf("[storage]\ndriver = \"vfs\"\ngraphroot = %q\nrunroot = %q\n", hostOpts.GraphRoot, hostOpts.RunRoot)), 0o644)
	t.Setenv("CONTAINERS_STORAGE_CONF", conf)
	phys := t.TempDir()
	opts := Options{Mode: Stored, Fetch: fo, ScratchDir: filepath.Join(t.TempDir(), "s")}

	_, err := Install(context.Background(), phys, t.TempDir(), decls, opts, event.Emitter{})
	if errs.KindOf(err) != errs.Fetch || !strings.Contains(err.Error(), "example.invalid/bl/one:latest") || !strings.Contains(errs.HintOf(err), "--bound-images pull") {
		t.Fatalf("nothing stored: %v (hint %q), want a fetch error naming the images and --bound-images pull", err, errs.HintOf(err))
	}
	if _, err := os.Stat(hostOpts.GraphRoot); !os.IsNotExist(err) {
		t.Fatalf("Install created the host's storage: %v", err)
	}
	if _, err := os.Stat(filepath.Join(phys, StorePath)); !os.IsNotExist(err) {
		t.Fatalf("Install created the target's store before failing: %v", err)
	}

	// Store one image on the "host": the other is still missing.
	hs, err := storage.GetStore(hostOpts)
	if err != nil {
		t.Fatal(err)
	}
	sys, _ := fetch.SystemContext(fo, t.TempDir())
	pc, _, _ := fetch.PolicyContext(fo)
	named, _ := reference.ParseNormalizedNamed("example.invalid/bl/one:latest")
	src, _ := docker.NewReference(named)
	dst, _ := istorage.Transport.NewStoreReference(hs, named, "")
	if _, err := copy.Image(context.Background(), pc, dst, src, &copy.Options{SourceCtx: sys}); err != nil {
		t.Fatal(err)
	}
	hostImg, err := hs.Image(named.String())
	if err != nil {
		t.Fatal(err)
	}
	hs.Shutdown(true)
	_, err = Install(context.Background(), phys, t.TempDir(), decls, opts, event.Emitter{})
	if err == nil || !strings.Contains(err.Error(), "example.invalid/bl/two:latest") || strings.Contains(err.Error(), "bl/one") {
		t.Fatalf("one stored: %v, want only two named", err)
	}

	res, err := Install(context.Background(), phys, t.TempDir(), decls[:1], opts, event.Emitter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].ID != "sha256:"+hostImg.ID || res[0].From != "containers-storage" {
		t.Errorf("result %+v, want image ID %s from containers-storage (registry digest %s)", res, hostImg.ID, digests[named.String()])
	}
}

func TestInstallSkipAndNone(t *testing.T) {
	phys := t.TempDir()
	for _, tt := range []struct {
		mode Mode
		imgs []Image
	}{{Skip, decls}, {Stored, nil}, {Pull, []Image{}}} {
		res, err := Install(context.Background(), phys, t.TempDir(), tt.imgs, Options{Mode: tt.mode, ScratchDir: t.TempDir()}, event.Emitter{})
		if err != nil || len(res) != 0 {
			t.Errorf("%s with %d images: %v %v", tt.mode, len(tt.imgs), res, err)
		}
	}
	if _, err := os.Stat(filepath.Join(phys, "ostree")); !os.IsNotExist(err) {
		t.Errorf("skip made a store: %v", err)
	}
	if _, err := Install(context.Background(), phys, t.TempDir(), decls, Options{Mode: "fast", ScratchDir: t.TempDir()}, event.Emitter{}); errs.KindOf(err) != errs.Usage {
		t.Errorf("unknown mode: %v", err)
	}
}

func TestImageStoreConfig(t *testing.T) {
	for _, tt := range []struct {
		name, path, conf, driver string
		opts                     []string
		kind                     errs.Kind
	}{
		{"none", "", "", "overlay", nil, 0},
		{"etc vfs", "etc/containers/storage.conf", "[storage]\ndriver = \"vfs\"\n", "vfs", nil, 0},
		{"usr share overlay2", "usr/share/containers/storage.conf", "[storage]\ndriver = \"overlay2\"\n", "overlay", nil, 0},
		{"force mask", "usr/etc/containers/storage.conf", "[storage]\ndriver = \"overlay\"\n[storage.options.overlay]\nforce_mask = \"0755\"\nmountopt = \"nodev\"\n", "overlay", []string{"overlay.force_mask=0755"}, 0},
		{"btrfs", "etc/containers/storage.conf", "[storage]\ndriver = \"btrfs\"\n", "", nil, errs.Image},
		{"bad toml", "etc/containers/storage.conf", "[storage\n", "", nil, errs.Image},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tree := t.TempDir()
			if tt.path != "" {
				os.MkdirAll(filepath.Dir(filepath.Join(tree, tt.path)), 0o755)
				os.WriteFile(filepath.Join(tree, tt.path), []byte(tt.conf), 0o644)
			}
			cfg, err := imageStoreConfig(tree)
			if tt.kind != 0 {
				if errs.KindOf(err) != tt.kind {
					t.Fatalf("err %v, want kind %v", err, tt.kind)
				}
				return
			}
			if err != nil || cfg.Driver != tt.driver || fmt.Sprint(cfg.Options) != fmt.Sprint(tt.opts) {
				t.Fatalf("config %+v %v, want %s %v", cfg, err, tt.driver, tt.opts)
			}
		})
	}
}

func TestImageAuthFile(t *testing.T) {
	tree, scratch := t.TempDir(), t.TempDir()
	if p, err := imageAuthFile(tree, scratch); p != "" || err != nil {
		t.Fatalf("no auth file: %q %v", p, err)
	}
	write := func(p, data string) {
		os.MkdirAll(filepath.Dir(filepath.Join(tree, p)), 0o755)
		os.WriteFile(filepath.Join(tree, p), []byte(data), 0o600)
	}
	write("usr/lib/ostree/auth.json", `{"auths":{"usr":{}}}`)
	write("etc/ostree/auth.json", `{"auths":{"etc":{}}}`)
	p, err := imageAuthFile(tree, scratch)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p)
	var doc map[string]map[string]any
	if json.Unmarshal(data, &doc) != nil || doc["auths"]["etc"] == nil || !strings.HasPrefix(p, scratch) {
		t.Fatalf("auth file %s: %s, want the image's /etc/ostree/auth.json copied into scratch", p, data)
	}
	// A link to a host file resolves inside the tree.
	os.Remove(filepath.Join(tree, "etc/ostree/auth.json"))
	os.Remove(filepath.Join(tree, "usr/lib/ostree/auth.json"))
	os.Symlink("/etc/passwd", filepath.Join(tree, "etc/ostree/auth.json"))
	if p, err := imageAuthFile(tree, scratch); p != "" || err != nil {
		t.Fatalf("dangling link: %q %v", p, err)
	}
}
