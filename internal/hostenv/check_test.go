package hostenv

import (
	"strings"
	"testing"

	"github.com/bootlace/bootlace/internal/errs"
)

const testID = "8598d57defc1b0e6ce2278a5a6911addd4037899e159e15b74037321891916d5"

// goodContainer is what podman run --privileged --pid=host -v /dev:/dev
// -v /var/lib/containers:/var/lib/containers gives.
func goodContainer() *Facts {
	return &Facts{InContainer: true, Markers: []string{ContainerEnvPath, "container=podman"},
		Env:     &ContainerEnv{Engine: "podman-4.3.1", Image: "localhost/bootlace/fixture:bookworm", ImageID: testID},
		HostPID: true, CapSysAdmin: true, DevFS: "devtmpfs", LoopControl: true,
		Storage: &Storage{GraphRoot: HostStorage, Driver: "overlay", Via: "bind mount"}}
}

func TestCheck(t *testing.T) {
	own := Request{OwnImage: true, Loopback: true, Target: true}
	tests := []struct {
		name     string
		facts    func(f *Facts)
		req      Request
		wantKind errs.Kind // 0 (Internal) means no error
		wantIn   string    // in the error (message or hint)
	}{
		{"host, explicit source", func(f *Facts) { *f = Facts{} }, Request{Device: "/dev/vdb", Target: true}, 0, ""},
		{"host, no source", func(f *Facts) { *f = Facts{} }, own, errs.Usage, "not running in a container"},
		{"documented podman run", nil, own, 0, ""},
		{"storage through PID 1 only", func(f *Facts) {
			f.Storage = &Storage{GraphRoot: "/proc/1/root" + HostStorage, Driver: "vfs", Via: "host PID 1 (--pid=host)"}
		}, own, 0, ""},
		{"bound storage makes --pid=host unnecessary", func(f *Facts) { f.HostPID = false }, own, 0, ""},
		{"explicit source in a container skips the image checks", func(f *Facts) { f.Env = nil; f.Storage = nil }, Request{Loopback: true, Target: true}, 0, ""},
		{"rootless=1", func(f *Facts) { f.Env.Rootless = true }, own, errs.Usage, "sudo podman run"},
		{"user namespace", func(f *Facts) { f.UserNS = true }, own, errs.Usage, "rootless"},
		{"no CAP_SYS_ADMIN", func(f *Facts) { f.CapSysAdmin = false }, own, errs.Usage, "--privileged"},
		{"engine's own /dev", func(f *Facts) { f.DevFS = "tmpfs" }, own, errs.Usage, "-v /dev:/dev"},
		{"print-configuration needs no /dev", func(f *Facts) { f.DevFS = "tmpfs"; f.LoopControl = false }, Request{OwnImage: true}, 0, ""},
		{"print-configuration still needs the image", func(f *Facts) { f.DevFS = "tmpfs"; f.Storage = nil; f.HostPID = false }, Request{OwnImage: true}, errs.Usage, "--pid=host"},
		{"no loop-control", func(f *Facts) { f.LoopControl = false }, own, errs.Usage, "-v /dev:/dev"},
		{"no loop-control, not needed", func(f *Facts) { f.LoopControl = false }, Request{OwnImage: true, Device: "/dev/vdb", DeviceExists: true, Target: true}, 0, ""},
		{"target device absent", nil, Request{OwnImage: true, Device: "/dev/vdb", Target: true}, errs.Target, "-v /dev:/dev"},
		{"no .containerenv (docker)", func(f *Facts) { f.Env = nil; f.Markers = []string{"/.dockerenv"} }, own, errs.Usage, "--source-imgref"},
		{"empty .containerenv (not privileged)", func(f *Facts) { f.Env = &ContainerEnv{} }, own, errs.Usage, "--privileged"},
		{"bad image ID", func(f *Facts) { f.Env.ImageID = "../../etc" }, own, errs.Usage, "not a 64-digit"},
		{"btrfs storage", func(f *Facts) { f.Storage = nil; f.UnsupportedDriver = "btrfs" }, own, errs.Usage, "btrfs"},
		{"no --pid=host and nothing bound", func(f *Facts) { f.Storage = nil; f.HostPID = false }, own, errs.Usage, "--pid=host"},
		{"PID 1 shielded", func(f *Facts) {
			f.Storage = nil
			f.HostPID = false
			f.PID1Unreachable = "permission denied"
		}, own, errs.Usage, "-v /var/lib/containers:/var/lib/containers"},
		{"host storage elsewhere", func(f *Facts) {
			f.Storage = nil
			f.StorageSearched = []string{"/proc/1/root" + HostStorage}
		}, own, errs.Usage, "-v /var/lib/containers:/var/lib/containers"},
		{"started by ID", func(f *Facts) { f.Env.Image = "" }, own, errs.Usage, "--target-imgref"},
		{"started by ID, --target-imgref given", func(f *Facts) { f.Env.Image = "" }, Request{OwnImage: true, Loopback: true, TargetImgref: true, Target: true}, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := goodContainer()
			if tc.facts != nil {
				tc.facts(f)
			}
			err := Check(f, tc.req)
			if tc.wantKind == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %v", tc.wantKind)
			}
			if k := errs.KindOf(err); k != tc.wantKind {
				t.Errorf("kind %v, want %v (%v)", k, tc.wantKind, err)
			}
			if all := err.Error() + " | " + errs.HintOf(err); !strings.Contains(all, tc.wantIn) {
				t.Errorf("%q does not mention %q", all, tc.wantIn)
			}
		})
	}
}

func TestNormalizeImageName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"localhost/bootlace/fixture:bookworm", "localhost/bootlace/fixture:bookworm"},
		{"quay.io/x/os:tag", "quay.io/x/os:tag"},
		{"quay.io/x/os", "quay.io/x/os:latest"},
		{"fedora", "docker.io/library/fedora:latest"},
		{"registry.local:5000/os:1", "registry.local:5000/os:1"},
		{"", ""},
		{testID, ""},
		{"sha256:" + testID, ""},
		{"UPPER/case", ""},
	}
	for _, tc := range tests {
		got, err := NormalizeImageName(tc.in)
		if (err != nil) != (tc.want == "") || got != tc.want {
			t.Errorf("NormalizeImageName(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestOwnImageRef(t *testing.T) {
	f := goodContainer()
	want := "containers-storage:[overlay@/var/lib/containers/storage+/run/x]@" + testID
	if got := f.OwnImageRef("/run/x"); got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
