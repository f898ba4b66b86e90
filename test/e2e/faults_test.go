package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/bootlace/bootlace/internal/testbed/faultproxy"
	"github.com/bootlace/bootlace/internal/testbed/registry"
)

// pushedFixture pushes the bookworm fixture to a fresh loopback registry.
func pushedFixture(t *testing.T, tag string) *registry.Registry {
	t.Helper()
	archive := fixture(t, "bookworm")
	reg := registry.StartForTest(t)
	start := time.Now()
	if _, err := reg.Push(context.Background(), "oci-archive:"+archive, "bootlace/fixture:"+tag); err != nil {
		t.Fatal(err)
	}
	t.Logf("pushed the fixture in %s", time.Since(start).Round(100*time.Millisecond))
	return reg
}

// TestInstallThroughRegistryFaults installs through a proxy that answers
// 500 and 503, resets a layer download part-way twice and stalls one: the
// install must ride them out and produce a bootable-looking report.
func TestInstallThroughRegistryFaults(t *testing.T) {
	requireRoot(t)
	reg := pushedFixture(t, "faults")
	p := faultproxy.StartForTest(t, reg,
		faultproxy.Rule{Match: "/manifests/", Kind: faultproxy.Status, Status: 503, Count: 1},
		faultproxy.Rule{Match: "/blobs/", Kind: faultproxy.Status, Status: 500, Count: 2},
		faultproxy.Rule{Match: "/blobs/", Kind: faultproxy.Reset, After: 5 << 20, Count: 2},
		// Shorter than the default stall timeout (60 s, no CLI flag): the
		// client must wait it out; the stall detector itself is covered by
		// internal/fetch's tests with a 2 s timeout.
		faultproxy.Rule{Match: "/blobs/", Kind: faultproxy.Stall, After: 1 << 20, Stall: 3 * time.Second, Count: 1},
	)
	disk := sparseDisk(t, 8<<30)
	loops, mounts := hostState(t)
	out, stderr, code := bootlaceRun(t, nil, "install", "to-disk", "--bound-images", "skip", "--via-loopback",
		"--source-imgref", "docker://"+p.Addr+"/bootlace/fixture:faults",
		"--cert-dir", p.CertDir, "--creds", reg.User+":"+reg.Password,
		"--target-imgref", "quay.io/bootlace/fixture:bookworm", "--json", disk)
	checkHostUnchanged(t, loops, mounts)
	kinds := map[faultproxy.Kind]int{}
	for _, in := range p.Injections() {
		kinds[in.Kind]++
	}
	t.Logf("injected %v over %d requests", kinds, len(p.Requests()))
	if code != 0 {
		t.Fatalf("install through faults failed (exit %d):\n%s", code, tail(stderr, 60))
	}
	if kinds[faultproxy.Status] != 3 || kinds[faultproxy.Reset] != 2 || kinds[faultproxy.Stall] != 1 {
		t.Errorf("not every fault was injected: %v", kinds)
	}
	if !strings.Contains(stderr, "retry") {
		t.Errorf("no retry was reported on stderr:\n%s", tail(stderr, 30))
	}
	rep := parseReport(t, out)
	if rep.Commit == "" || rep.Origin != "ostree-unverified-registry:quay.io/bootlace/fixture:bookworm" {
		t.Errorf("report commit %q origin %q", rep.Commit, rep.Origin)
	}
}

// TestInstallPermanentRegistryFault fails every blob request: the install
// must give up with exit 5, name the blob and the registry, say what to do,
// and leave the host as it was.
func TestInstallPermanentRegistryFault(t *testing.T) {
	requireRoot(t)
	reg := pushedFixture(t, "broken")
	p := faultproxy.StartForTest(t, reg, faultproxy.Rule{Match: "/blobs/", Kind: faultproxy.Status, Status: 500})
	disk := sparseDisk(t, 8<<30)
	loops, mounts := hostState(t)
	start := time.Now()
	_, stderr, code := bootlaceRun(t, nil, "install", "to-disk", "--bound-images", "skip", "--via-loopback",
		"--source-imgref", "docker://"+p.Addr+"/bootlace/fixture:broken",
		"--cert-dir", p.CertDir, "--creds", reg.User+":"+reg.Password, disk)
	checkHostUnchanged(t, loops, mounts)
	t.Logf("gave up after %s and %d injected 500s", time.Since(start).Round(100*time.Millisecond), len(p.Injections()))
	if code != 5 {
		t.Fatalf("exit %d, want 5:\n%s", code, tail(stderr, 30))
	}
	t.Logf("error output:\n%s", tail(strings.TrimSpace(stderr), 3))
	for _, want := range []string{"blob sha256:", p.Addr, "500", "run the same command again"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("error output lacks %q:\n%s", want, tail(stderr, 20))
		}
	}
	if n := len(p.Injections()); n < 2 || n > 20 {
		t.Errorf("%d blob requests failed: retries are not bounded as expected", n)
	}
}
