package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bootlace/bootlace/internal/testbed/registry"
)

// The fixture declares these bound images (test/fixtures/build.sh) under
// fixed names; tests map the names to their loopback registry with a
// registries.conf mirror.
const (
	boundA = "localhost:5000/bootlace/app-a:latest"
	boundB = "localhost:5000/bootlace/app-b:latest"
)

// appImages builds (or reuses from the cache) the two application images.
func appImages(t *testing.T) string {
	t.Helper()
	fixtureMu.Lock()
	defer fixtureMu.Unlock()
	out, err := exec.Command(filepath.Join(repoRoot, "test/fixtures/build-apps.sh")).Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("building the bound-image fixtures: %v\n%s", err, stderr)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// boundServer serves the fixture's bound images from a loopback registry.
type boundServer struct {
	reg *registry.Registry
	// conf is a registries.conf mirroring localhost:5000/bootlace to the registry.
	conf string
	// digests maps each declared name to its manifest digest in the registry.
	digests map[string]string
}

// serveBoundImages pushes the two app images to reg and writes the mirror
// configuration.
func serveBoundImages(t *testing.T, reg *registry.Registry) *boundServer {
	t.Helper()
	dir := appImages(t)
	s := &boundServer{reg: reg, digests: map[string]string{}}
	for name, app := range map[string]string{boundA: "app-a", boundB: "app-b"} {
		d, err := reg.Push(context.Background(), "oci-archive:"+filepath.Join(dir, app+".oci-archive.tar"), "bootlace/"+app+":latest")
		if err != nil {
			t.Fatal(err)
		}
		s.digests[name] = d
	}
	s.conf = filepath.Join(t.TempDir(), "registries.conf")
	conf := fmt.Sprintf("[[registry]]\nlocation = \"localhost:5000/bootlace\"\n\n[[registry.mirror]]\nlocation = \"%s/bootlace\"\n", reg.Addr)
	if err := os.WriteFile(s.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// pullArgs are the flags an install needs to pull the bound images.
func (s *boundServer) pullArgs() []string {
	return []string{"--bound-images", "pull", "--registries-conf", s.conf, "--cert-dir", s.reg.CertDir, "--authfile", s.reg.AuthFile}
}

// boundReport is the bound-images part of the --json report.
type boundReport struct {
	BoundImages []struct {
		Image  string `json:"image"`
		Digest string `json:"manifest-digest"`
		ID     string `json:"image-id"`
		From   string `json:"from"`
	} `json:"bound-images"`
	Phases map[string]string `json:"phase-durations"`
}

func parseBoundReport(t *testing.T, out []byte) boundReport {
	t.Helper()
	var r boundReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("parsing --json report: %v\n%s", err, out)
	}
	return r
}

// podmanTmp is where podman keeps run-time state for a store: its
// database in the store records the paths, so every call must reuse them
// (and podman wants a run root shorter than 50 characters).
func podmanTmp(store string) string {
	sum := sha256.Sum256([]byte(store))
	return "/tmp/blpm-" + hex.EncodeToString(sum[:6])
}

// podman runs Debian's podman on the target's bound-image store with every
// host path it would write redirected into a temp dir.
func podman(t *testing.T, store string, args ...string) []byte {
	t.Helper()
	tmp := podmanTmp(store)
	t.Cleanup(func() { os.RemoveAll(tmp) })
	argv := append([]string{"--root", store, "--runroot", filepath.Join(tmp, "run"), "--tmpdir", filepath.Join(tmp, "libpod"),
		"--storage-driver", "overlay", "--events-backend", "none"}, args...)
	cmd := exec.Command("podman", argv...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// podmanImages lists the store's images as podman sees them: name -> digest.
func podmanImages(t *testing.T, store string) map[string]string {
	t.Helper()
	var imgs []struct {
		ID     string   `json:"Id"`
		Digest string   `json:"Digest"`
		Names  []string `json:"Names"`
	}
	out := podman(t, store, "images", "--digests", "--format", "json")
	if err := json.Unmarshal(out, &imgs); err != nil {
		t.Fatalf("podman images: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, im := range imgs {
		for _, n := range im.Names {
			got[n] = im.Digest
		}
	}
	return got
}

// checkStore asserts that podman lists exactly the fixture's bound images
// in the target's store with the wanted digests.
func checkStore(t *testing.T, root string, want map[string]string) {
	t.Helper()
	got := podmanImages(t, filepath.Join(root, "ostree/bootc/storage"))
	if len(got) != len(want) {
		t.Errorf("podman lists %v in the target's store, want %v", got, want)
	}
	for name, d := range want {
		if got[name] != d {
			t.Errorf("podman: %s has digest %q in the target's store, want %s", name, got[name], d)
		}
	}
}

// runContainer starts a bound image from the target's store with podman.
// This machine needs workarounds that have nothing to do with the store:
// it has no systemd and mounts cgroup v1 plus a cgroup2 hierarchy at
// /sys/fs/cgroup/unified that offers a controller (hugetlb), which crun
// refuses ("cgroups in hybrid mode not supported, drop all controllers from
// cgroupv2"), so podman runs in a private mount namespace without that
// mount and with the cgroupfs manager; and CAP_SYS_RESOURCE is not in the
// bounding set, so the rlimits podman sets (nofile 1048576 by default) must
// stay below the current hard limits.
func runContainer(t *testing.T, store, image string) string {
	t.Helper()
	tmp := podmanTmp(store)
	t.Cleanup(func() { os.RemoveAll(tmp) })
	script := `set -e
if mountpoint -q /sys/fs/cgroup/unified; then umount /sys/fs/cgroup/unified; fi
exec podman --root "$1" --runroot "$2/run" --tmpdir "$2/libpod" --storage-driver overlay --events-backend none \
	--cgroup-manager cgroupfs run --rm --network none --pull never \
	--ulimit nofile=1024:1024 --ulimit nproc=1024:1024 "$3"
`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", store, tmp, image)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("podman run %s from the target's store: %v\n%s", image, err, out)
	}
	return string(out)
}

// TestBoundImagesPull installs with --bound-images pull through a
// registries.conf mirror, kills the install while it copies the bound
// images, and re-runs it: podman then lists both images in the target's
// store with the registry's digests and runs one of them.
func TestBoundImagesPull(t *testing.T) {
	requireRoot(t)
	archive := fixture(t, "bookworm")
	srv := serveBoundImages(t, registry.StartForTest(t))
	pd := prepareDisk(t)
	args := append([]string{"install", "to-filesystem", "--source-imgref", "oci-archive:" + archive, "--json"}, srv.pullArgs()...)
	args = append(args, pd.root)

	before, _ := hostState(t)
	cmd, _, done := startUntil(t, func(ev progressEvent) bool {
		return ev.Type == "progress" && ev.Phase == "bound-images"
	}, args...)
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
	waitClean(t, before)

	start := time.Now()
	rerun := append([]string{"install", "to-filesystem", "--progress-fd", "3"}, args[2:]...)
	out, stderr, stream, code := runWithFD(t, rerun...)
	if code != 0 {
		t.Fatalf("re-run after the kill: exit %d\n%s", code, tail(string(stderr), 40))
	}
	checkBoundProgress(t, parseEvents(t, stream))
	rep := parseBoundReport(t, out)
	t.Logf("re-run %s; bound-images phase %s", time.Since(start).Round(100*time.Millisecond), rep.Phases["bound-images"])
	checkHostUnchanged(t, before, "")
	checkInstalled(t, pd.root, parseReport(t, out))
	if len(rep.BoundImages) != 2 {
		t.Fatalf("report lists bound images %+v, want 2", rep.BoundImages)
	}
	for _, b := range rep.BoundImages {
		if b.Digest != srv.digests[b.Image] || b.From != "registry" || b.ID == "" {
			t.Errorf("report: %+v, want digest %s from the registry", b, srv.digests[b.Image])
		}
	}
	// finalize remounted the target read-only; podman takes locks in the store.
	run(t, "", "mount", "-o", "remount,rw", pd.root)
	store := filepath.Join(pd.root, "ostree/bootc/storage")
	checkStore(t, pd.root, srv.digests)
	if got := runContainer(t, store, boundA); !strings.Contains(got, "bootlace bound image app-a") {
		t.Errorf("podman run %s printed %q", boundA, got)
	}
}

// checkBoundProgress checks the bound-images phase's progress: one item per
// image, done never decreasing and ending at a constant, non-zero total.
func checkBoundProgress(t *testing.T, evs []progressEvent) {
	t.Helper()
	last := map[string]progressEvent{}
	for _, e := range evs {
		if e.Type != "progress" || e.Phase != "bound-images" {
			continue
		}
		if p, ok := last[e.Item]; ok && (e.Done < p.Done || e.Total != p.Total) {
			t.Errorf("bound-images progress for %s went from %d/%d to %d/%d", e.Item, p.Done, p.Total, e.Done, e.Total)
		}
		last[e.Item] = e
	}
	for _, name := range []string{boundA, boundB} {
		e, ok := last[name]
		if !ok || e.Total == 0 || e.Done != e.Total {
			t.Errorf("bound-images progress for %s ended at %+v, want done = total > 0", name, e)
		}
	}
}

// hostStore makes a private containers-storage (vfs, in the test's temp
// dir) and returns the environment that points bootlace at it.
func hostStore(t *testing.T) (env []string, graph string) {
	t.Helper()
	d := t.TempDir()
	graph = filepath.Join(d, "graph")
	conf := filepath.Join(d, "storage.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("[storage]\ndriver = \"vfs\"\ngraphroot = %q\nrunroot = %q\n", graph, filepath.Join(d, "run"))), 0o644); err != nil {
		t.Fatal(err)
	}
	return append(os.Environ(), "CONTAINERS_STORAGE_CONF="+conf), graph
}

// bootlaceEnv runs bootlace with env and returns stdout, stderr and the exit code.
func bootlaceEnv(t *testing.T, env []string, args ...string) ([]byte, string, int) {
	t.Helper()
	cmd := exec.Command(bootlaceBin, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("bootlace %s: %s", firstArgs(args), time.Since(start).Round(100*time.Millisecond))
	if ee, ok := err.(*exec.ExitError); ok {
		return stdout.Bytes(), stderr.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.Bytes(), stderr.String(), 0
}

// TestBoundImagesStored installs with the default mode, stored: first with
// nothing in the host's containers-storage (exit 5, naming the images and
// --bound-images pull), then, after the images were pulled into the host's
// storage and the registry stopped, the same command resumes and copies
// them from there.
func TestBoundImagesStored(t *testing.T) {
	requireRoot(t)
	archive := fixture(t, "bookworm")
	reg := registry.StartForTest(t)
	srv := serveBoundImages(t, reg)
	env, graph := hostStore(t)
	pd := prepareDisk(t)
	args := []string{"install", "to-filesystem", "--source-imgref", "oci-archive:" + archive, "--json", pd.root}

	_, stderr, code := bootlaceEnv(t, env, args...)
	if code != 5 || !strings.Contains(stderr, boundA) || !strings.Contains(stderr, boundB) || !strings.Contains(stderr, "--bound-images pull") {
		t.Fatalf("stored mode with an empty host storage: exit %d, want 5 naming both images and --bound-images pull:\n%s", code, tail(stderr, 20))
	}
	if _, err := os.Stat(graph); !os.IsNotExist(err) {
		t.Errorf("bootlace created the host's containers-storage %s: %v", graph, err)
	}

	// What a user would do: pull the images into the host's storage.
	ids := map[string]string{}
	for name := range srv.digests {
		src := "docker://" + reg.Addr + strings.TrimPrefix(name, "localhost:5000")
		cmd := exec.Command("skopeo", "copy", "-q", "--src-cert-dir", reg.CertDir, "--src-authfile", reg.AuthFile, src, "containers-storage:"+name)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("skopeo copy %s: %v\n%s", name, err, out)
		}
		ids[name] = imageID(t, env, name)
	}
	if err := reg.Stop(); err != nil {
		t.Fatal(err)
	}

	out, stderr, code := bootlaceEnv(t, env, args...)
	if code != 0 {
		t.Fatalf("stored mode after pulling into the host's storage: exit %d\n%s", code, tail(stderr, 40))
	}
	rep := parseBoundReport(t, out)
	checkInstalled(t, pd.root, parseReport(t, out))
	if len(rep.BoundImages) != 2 {
		t.Fatalf("report lists bound images %+v, want 2", rep.BoundImages)
	}
	for _, b := range rep.BoundImages {
		if b.ID != ids[b.Image] || b.From != "containers-storage" {
			t.Errorf("report: %+v, want image ID %s from containers-storage", b, ids[b.Image])
		}
	}
	// Copying between stores stores layers uncompressed, which changes the
	// manifest digest (as with podman or bootc); the image ID (the config's
	// digest) is the same.
	run(t, "", "mount", "-o", "remount,rw", pd.root)
	store := filepath.Join(pd.root, "ostree/bootc/storage")
	var imgs []struct {
		ID    string   `json:"Id"`
		Names []string `json:"Names"`
	}
	if err := json.Unmarshal(podman(t, store, "images", "--format", "json"), &imgs); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, im := range imgs {
		for _, n := range im.Names {
			got[n] = "sha256:" + im.ID
		}
	}
	if len(got) != 2 || got[boundA] != ids[boundA] || got[boundB] != ids[boundB] {
		t.Errorf("podman lists %v in the target's store, want the host's image IDs %v", got, ids)
	}
}

// imageID returns the ID of an image in the host storage env points at.
func imageID(t *testing.T, env []string, name string) string {
	t.Helper()
	cmd := exec.Command("skopeo", "inspect", "--raw", "--config", "containers-storage:"+name)
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("skopeo inspect --raw --config %s: %v", name, err)
	}
	sum := sha256.Sum256(out)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// TestBoundImagesAuthFile installs an image whose bound image declares
// AuthFile=, which bootc refuses too: exit 3 naming the declaration,
// before anything is deployed.
func TestBoundImagesAuthFile(t *testing.T) {
	requireRoot(t)
	archive := fixture(t, "bookworm")
	layout := withExtraLayer(t, archive, map[string]string{
		"usr/share/containers/systemd/private.image": "[Image]\nImage=quay.io/example/private:1\nAuthFile=/etc/private-auth.json\n",
	}, map[string]string{
		"usr/lib/bootc/bound-images.d/private.image": "/usr/share/containers/systemd/private.image",
	})
	pd := prepareDisk(t)
	_, stderr, code := bootlaceRun(t, nil, "install", "to-filesystem", "--source-imgref", "oci:"+layout, "--bound-images", "skip", pd.root)
	if code != 3 || !strings.Contains(stderr, "AuthFile=") || !strings.Contains(stderr, "/usr/lib/bootc/bound-images.d/private.image") {
		t.Fatalf("exit %d, want 3 naming AuthFile= and the declaration:\n%s", code, tail(stderr, 20))
	}
	if _, err := os.Stat(filepath.Join(pd.root, "ostree")); !os.IsNotExist(err) {
		t.Errorf("the install wrote an ostree repository before refusing the image: %v", err)
	}
}

// withExtraLayer copies an OCI archive into an OCI layout and adds one
// uncompressed layer holding files and symlinks, as a derived image would.
func withExtraLayer(t *testing.T, archive string, files, links map[string]string) string {
	t.Helper()
	dir := filepath.Join(diskDir(t), "layout")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "", "tar", "-C", dir, "-xf", archive)
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	var names []string
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg})
		tw.Write([]byte(files[n]))
	}
	for n, target := range links {
		tw.WriteHeader(&tar.Header{Name: n, Linkname: target, Mode: 0o777, Typeflag: tar.TypeSymlink})
	}
	tw.Close()

	blob := func(data []byte) string {
		sum := sha256.Sum256(data)
		d := hex.EncodeToString(sum[:])
		if err := os.WriteFile(filepath.Join(dir, "blobs/sha256", d), data, 0o644); err != nil {
			t.Fatal(err)
		}
		return "sha256:" + d
	}
	read := func(d string) map[string]any {
		raw, err := os.ReadFile(filepath.Join(dir, "blobs/sha256", strings.TrimPrefix(d, "sha256:")))
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	idxRaw, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idx map[string]any
	json.Unmarshal(idxRaw, &idx)
	desc := idx["manifests"].([]any)[0].(map[string]any)
	man := read(desc["digest"].(string))
	cfgDesc := man["config"].(map[string]any)
	cfg := read(cfgDesc["digest"].(string))

	layerDigest := blob(layer.Bytes())
	rootfs := cfg["rootfs"].(map[string]any)
	rootfs["diff_ids"] = append(rootfs["diff_ids"].([]any), layerDigest)
	cfgRaw, _ := json.Marshal(cfg)
	cfgDesc["digest"], cfgDesc["size"] = blob(cfgRaw), len(cfgRaw)
	man["layers"] = append(man["layers"].([]any), map[string]any{
		"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": layer.Len()})
	manRaw, _ := json.Marshal(man)
	desc["digest"], desc["size"] = blob(manRaw), len(manRaw)
	idxRaw, _ = json.Marshal(idx)
	if err := os.WriteFile(filepath.Join(dir, "index.json"), idxRaw, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}
