package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootlace/bootlace/internal/testbed/qemu"
	"golang.org/x/sys/unix"
)

const containerImage = "localhost/bootlace/fixture:bookworm"

// podmanBed is a test-private containers-storage, laid out as the host's
// /var/lib/containers would be (<dir>/storage), so that binding <dir> at
// /var/lib/containers gives the container what the documented
// "-v /var/lib/containers:/var/lib/containers" gives on a real host.
type podmanBed struct {
	dir string
	// global are podman's global options: the private storage, and the
	// runtime settings this machine needs (podmanConfigs).
	global []string
	// runOpts are extra podman-run options this machine needs.
	runOpts []string
}

// podmanConfigs are tried in order until one starts a container. The
// second is what the test machine (a VM without systemd as PID 1, with
// cgroup v1 plus an empty v2 hierarchy, and without CAP_SYS_RESOURCE)
// needs: crun refuses "cgroups in hybrid mode", and podman's default
// RLIMIT_NOFILE of 1048576 is above the hard limit, which cannot be raised.
// The failures of every setting are quoted when none works.
func podmanConfigs() [][2][]string {
	var nofile, nproc unix.Rlimit
	_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile)
	_ = unix.Getrlimit(unix.RLIMIT_NPROC, &nproc)
	// runc also refuses podman's default RLIMIT_NPROC here ("error setting
	// rlimit type 6"); 32768 given explicitly passes.
	nproc.Max = min(nproc.Max, 32768)
	return [][2][]string{
		{nil, nil},
		{{"--runtime", "runc", "--cgroup-manager", "cgroupfs"},
			{"--ulimit", fmt.Sprintf("nofile=%d:%d", nofile.Max, nofile.Max), "--ulimit", fmt.Sprintf("nproc=%d:%d", nproc.Max, nproc.Max)}},
	}
}

// newPodmanBed stores the bookworm fixture in a private storage and finds
// podman settings that can run a container on this machine. It skips the
// test, quoting podman's errors, when no setting can.
func newPodmanBed(t *testing.T) *podmanBed {
	t.Helper()
	if _, err := exec.LookPath("podman"); err != nil {
		t.Fatal("podman is not installed: run scripts/deps.sh")
	}
	archive := fixture(t, "bookworm")
	dir, err := os.MkdirTemp("/var/tmp", "bootlace-e2e-podman-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeTree(t, dir) })
	// vfs: the overlay driver cannot apply the fixture's layers on the test
	// machine ("processing tar file(no such file or directory)"); the
	// reading side (bootlace) handles overlay and vfs alike.
	storage := fmt.Sprintf("[vfs@%s/storage+%s/run]", dir, dir)
	start := time.Now()
	if out, err := exec.Command("skopeo", "copy", "--quiet", "oci-archive:"+archive, "containers-storage:"+storage+containerImage).CombinedOutput(); err != nil {
		t.Fatalf("storing the fixture in containers-storage: %v\n%s", err, out)
	}
	t.Logf("fixture stored in %s/storage in %s", dir, time.Since(start).Round(100*time.Millisecond))
	base := []string{"--root", dir + "/storage", "--runroot", dir + "/run", "--storage-driver", "vfs"}
	var failures []string
	for _, c := range podmanConfigs() {
		b := &podmanBed{dir: dir, global: append(append([]string(nil), base...), c[0]...), runOpts: c[1]}
		out, err := b.cmd(append([]string{"run", "--rm", "--network=none"}, append(b.runOpts, containerImage, "true")...)...).CombinedOutput()
		if err == nil {
			t.Logf("podman runs containers with %q %q", c[0], c[1])
			return b
		}
		failures = append(failures, fmt.Sprintf("with %q %q: %v: %s", c[0], c[1], err, strings.TrimSpace(string(out))))
	}
	t.Skipf("podman cannot start a container on this machine (podman run --rm %s true):\n%s", containerImage, strings.Join(failures, "\n"))
	return nil
}

func (b *podmanBed) cmd(args ...string) *exec.Cmd {
	return exec.Command("podman", append(append([]string(nil), b.global...), args...)...)
}

// run starts the fixture's container with the given podman-run options and
// bootlace bind-mounted in, running bootlace with args.
func (b *podmanBed) run(t *testing.T, opts []string, args ...string) (stdout []byte, stderr string, code int) {
	t.Helper()
	argv := append([]string{"run", "--rm", "--network=none"}, b.runOpts...)
	argv = append(argv, opts...)
	argv = append(argv, "-v", bootlaceBin+":/usr/bin/bootlace:ro", containerImage, "bootlace")
	argv = append(argv, args...)
	cmd := b.cmd(argv...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	t.Logf("podman run %s bootlace %s: %s", strings.Join(opts, " "), firstArgs(args), time.Since(start).Round(100*time.Millisecond))
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("podman run: %v", err)
	}
	return out.Bytes(), errb.String(), code
}

// removeTree removes a test directory without crossing into anything still
// mounted below it.
func removeTree(t *testing.T, dir string) {
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			_ = unix.Unmount(f[4], unix.MNT_DETACH)
		}
	}
	if out, err := exec.Command("rm", "-rf", "--one-file-system", dir).CombinedOutput(); err != nil {
		t.Errorf("removing %s: %v %s", dir, err, out)
	}
}

// TestInContainerPodman is the bootc idiom: the image's own container,
// privileged, in the host's PID namespace, with the host's /dev and
// containers-storage, installs itself with no --source-imgref. The image
// comes from the host's storage by the ID podman wrote in
// /run/.containerenv, the origin names the image podman ran, and the disk
// boots.
func TestInContainerPodman(t *testing.T) {
	requireRoot(t)
	b := newPodmanBed(t)
	disk := sparseDisk(t, 8<<30)
	diskDir := filepath.Dir(disk)
	storageBind := []string{"-v", b.dir + ":/var/lib/containers"}

	// Flags missing from the documented command line: a usage error naming
	// the flag, before the disk is touched.
	before := hashFile(t, disk)
	for _, tc := range []struct {
		opts []string
		flag string
	}{
		{[]string{"-v", diskDir + ":" + diskDir}, "--privileged"},
		{[]string{"--privileged", "-v", "/dev:/dev", "-v", diskDir + ":" + diskDir}, "--pid=host"},
		{append([]string{"--privileged", "--pid=host", "-v", diskDir + ":" + diskDir}, storageBind...), "-v /dev:/dev"},
	} {
		_, stderr, code := b.run(t, tc.opts, "install", "to-disk", "--via-loopback", disk)
		if code != 2 || !strings.Contains(stderr, tc.flag) {
			t.Errorf("podman run %s: exit %d, want 2 naming %s:\n%s", strings.Join(tc.opts, " "), code, tc.flag, tail(stderr, 10))
		}
	}
	if hashFile(t, disk) != before {
		t.Error("a refused install changed the disk image")
	}

	loops, mounts := hostState(t)
	opts := append([]string{"--privileged", "--pid=host", "-v", "/dev:/dev", "-v", diskDir + ":" + diskDir}, storageBind...)
	out, stderr, code := b.run(t, opts, "install", "to-disk", "--via-loopback", "--json", "--bound-images", "skip", disk)
	if code != 0 {
		t.Fatalf("in-container install failed (exit %d):\n%s", code, tail(stderr, 60))
	}
	checkHostUnchanged(t, loops, mounts)
	rep := parseReport(t, out)
	var det struct {
		Detection struct {
			Environment, Engine, Image, Driver, Storage string
			ImageID                                     string `json:"image-id"`
		} `json:"source-detection"`
	}
	if err := json.Unmarshal(out, &det); err != nil {
		t.Fatal(err)
	}
	d := det.Detection
	imageID := strings.TrimSpace(string(mustOutput(t, b.cmd("image", "inspect", "--format", "{{.Id}}", containerImage))))
	if d.Environment != "container" || !strings.HasPrefix(d.Engine, "podman-") || d.Image != containerImage ||
		d.ImageID != imageID || d.Driver != "vfs" || d.Storage != "/var/lib/containers/storage" {
		t.Errorf("source detection %+v; want podman, %s, ID %s, vfs at /var/lib/containers/storage", d, containerImage, imageID)
	}
	if want := "ostree-unverified-registry:" + containerImage; rep.Origin != want {
		t.Errorf("origin %q, want %q", rep.Origin, want)
	}
	want := append([]string{"root=UUID=", "rw", "boot=UUID="}, fixtureKargs...)
	boot(t, disk, qemu.UEFI, want, nil, rep)
}

func mustOutput(t *testing.T, cmd *exec.Cmd) []byte {
	t.Helper()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(cmd.Args, " "), err)
	}
	return out
}
