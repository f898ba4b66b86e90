// Package e2e installs the real fixture images with the bootlace binary and
// boots the results in QEMU. It needs root, the test bed's host packages
// (scripts/deps.sh) and a few minutes per boot under TCG.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootlace/bootlace/internal/testbed/qemu"
)

var (
	bootlaceBin string
	repoRoot    string
)

func TestMain(m *testing.M) {
	_, file, _, _ := runtime.Caller(0)
	repoRoot = filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	dir, err := os.MkdirTemp("", "bootlace-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bootlaceBin = filepath.Join(dir, "bootlace")
	cmd := exec.Command("go", "build", "-o", bootlaceBin, "./cmd/bootlace")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building bootlace: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireRoot stops tests that cannot run unprivileged, with the reason.
func requireRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end install and boot: skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Fatal("end-to-end tests need root (loop devices, mounts, namespaces)")
	}
}

var fixtureMu sync.Mutex

// fixture builds (or reuses from the cache) the OCI archive of a suite.
func fixture(t *testing.T, suite string) string {
	t.Helper()
	fixtureMu.Lock()
	defer fixtureMu.Unlock()
	cmd := exec.Command(filepath.Join(repoRoot, "test/fixtures/build.sh"), suite)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("building %s fixture: %v\n%s", suite, err, tail(stderr.String(), 40))
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	path := lines[len(lines)-1]
	t.Logf("fixture %s: %s (%s)", suite, path, time.Since(start).Round(time.Second))
	return path
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// bootlace runs the binary and returns stdout; it fails the test on error.
func bootlace(t *testing.T, args ...string) []byte {
	t.Helper()
	out, stderr, code := bootlaceRun(t, nil, args...)
	if code != 0 {
		t.Fatalf("bootlace %s: exit %d\n%s", strings.Join(args, " "), code, tail(stderr, 60))
	}
	return out
}

// bootlaceRun runs bootlace (optionally through wrap, e.g. unshare) and
// returns stdout, stderr and the exit code.
func bootlaceRun(t *testing.T, wrap []string, args ...string) ([]byte, string, int) {
	t.Helper()
	argv := append(append([]string(nil), wrap...), bootlaceBin)
	argv = append(argv, args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("bootlace %s: %s", firstArgs(args), time.Since(start).Round(100*time.Millisecond))
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return stdout.Bytes(), stderr.String(), code
}

func firstArgs(a []string) string {
	if len(a) > 3 {
		a = a[:3]
	}
	return strings.Join(a, " ")
}

// report is the subset of bootlace's --json report the tests check.
type report struct {
	Image, ManifestDigest, Origin, Deployment, Commit, Stateroot string
	Kargs                                                        []string
	RootUUID                                                     string            `json:"root-uuid"`
	Phases                                                       map[string]string `json:"phase-durations"`
}

func parseReport(t *testing.T, out []byte) report {
	t.Helper()
	var r report
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("parsing --json report: %v\n%s", err, out)
	}
	var raw map[string]any
	_ = json.Unmarshal(out, &raw)
	r.Origin, _ = raw["origin"].(string)
	r.ManifestDigest, _ = raw["manifest-digest"].(string)
	t.Logf("phases: %v", r.Phases)
	return r
}

// sparseDisk makes an empty disk image file.
func sparseDisk(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(diskDir(t), "disk.raw")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return p
}

// diskDir keeps disks off tmpfs /tmp: they are sparse but large.
func diskDir(t *testing.T) string {
	d, err := os.MkdirTemp("/var/tmp", "bootlace-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// boot boots disk and checks what a user would check on the console: the
// marker, the kernel arguments in order, ostree's view of the deployment and
// the origin naming the container image. It returns the console log.
func boot(t *testing.T, disk string, fw qemu.Firmware, wantKargs []string, absentKargs []string, rep report) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	logPath := filepath.Join(filepath.Dir(disk), "console-"+string(fw)+".log")
	res, err := qemu.Boot(ctx, qemu.Options{Disk: disk, Firmware: fw, Markers: []string{"BOOTLACE-BOOT-OK"}, LogPath: logPath})
	if err != nil {
		t.Fatalf("boot under %s: %v", fw, err)
	}
	t.Logf("booted under %s in %s", fw, res.Duration.Round(time.Second))
	if res.Retried {
		t.Logf("boot under %s needed a second try: the first boot's guest kernel faulted before userspace (see %s)", fw, logPath)
	}
	cmdline := consoleValue(res.Log, "BOOTLACE: cmdline: ")
	if cmdline == "" {
		t.Fatalf("no cmdline line on the console:\n%s", tail(res.Log, 40))
	}
	if err := inOrder(strings.Fields(cmdline), wantKargs); err != nil {
		t.Errorf("kernel command line %q: %v", cmdline, err)
	}
	for _, a := range absentKargs {
		for _, f := range strings.Fields(cmdline) {
			if f == a || strings.HasPrefix(f, a+"=") {
				t.Errorf("kernel command line has %s, which must not be there: %q", f, cmdline)
			}
		}
	}
	// ostree admin status lists the booted deployment of the install.
	depl := regexp.MustCompile(`BOOTLACE:\s+\* (\S+) ([0-9a-f]{64})\.(\d+)`).FindStringSubmatch(res.Log)
	if depl == nil {
		t.Fatalf("ostree admin status shows no booted deployment:\n%s", tail(res.Log, 40))
	}
	if depl[1] != rep.Stateroot || depl[2] != rep.Commit {
		t.Errorf("booted deployment %s %s, installed %s %s", depl[1], depl[2], rep.Stateroot, rep.Commit)
	}
	if origin := consoleValue(res.Log, "BOOTLACE: origin: container-image-reference="); origin != rep.Origin {
		t.Errorf("deployment origin on the guest is %q, want %q", origin, rep.Origin)
	}
	return res.Log
}

// consoleValue returns the rest of the first console line containing prefix.
func consoleValue(log, prefix string) string {
	for _, l := range strings.Split(log, "\n") {
		if i := strings.Index(l, prefix); i >= 0 {
			return strings.TrimSpace(l[i+len(prefix):])
		}
	}
	return ""
}

// inOrder checks that want appears in got as a subsequence; entries ending
// in "=" match any value.
func inOrder(got, want []string) error {
	i := 0
	for _, g := range got {
		if i < len(want) && (g == want[i] || strings.HasSuffix(want[i], "=") && strings.HasPrefix(g, want[i])) {
			i++
		}
	}
	if i < len(want) {
		return fmt.Errorf("%q missing or out of order (want the sequence %q)", want[i], want)
	}
	return nil
}

// fixtureKargs are the kernel arguments the fixture's install config and
// kargs.d contribute, in bootc's order after the root setup.
var fixtureKargs = []string{"console=ttyS0,115200", "bootlace.fixture=install-config", "bootlace.fixture.kargsd=1", "bootlace.poweroff"}
