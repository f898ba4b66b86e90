package hostenv

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// fakeRoot builds the files Detect reads under a temporary root.
type fakeRoot struct {
	t    *testing.T
	root string
}

func (r fakeRoot) file(p, content string) {
	r.t.Helper()
	full := filepath.Join(r.root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

func (r fakeRoot) dir(p string) {
	r.t.Helper()
	if err := os.MkdirAll(filepath.Join(r.root, p), 0o755); err != nil {
		r.t.Fatal(err)
	}
}

// pid1 makes proc/1/root point at our own root (own PID namespace) or at
// another directory (the host's, --pid=host).
func (r fakeRoot) pid1(hostPID bool) string {
	r.t.Helper()
	r.dir("proc/1")
	target := r.root
	if hostPID {
		target = filepath.Join(r.t.TempDir(), "host")
		if err := os.MkdirAll(target, 0o755); err != nil {
			r.t.Fatal(err)
		}
	}
	if err := os.Symlink(target, filepath.Join(r.root, "proc/1/root")); err != nil {
		r.t.Fatal(err)
	}
	return target
}

const (
	capsPrivileged = "Name:\tbootlace\nCapEff:\t000001ffffffffff\n"
	capsDefault    = "Name:\tbootlace\nCapEff:\t00000000a80425fb\n"
	mountsHostDev  = "1 0 0:1 / / rw - overlay overlay rw\n24 1 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw\n25 24 0:24 / /dev/pts rw - devpts devpts rw\n"
	mountsOwnDev   = "1 0 0:1 / / rw - overlay overlay rw\n24 1 0:7 / /dev rw,nosuid - tmpfs tmpfs rw\n"
)

func TestDetect(t *testing.T) {
	t.Run("privileged podman, host PID, storage bound in", func(t *testing.T) {
		r := fakeRoot{t, t.TempDir()}
		r.file(ContainerEnvPath, podman431)
		r.file("proc/self/status", capsPrivileged)
		r.file("proc/self/uid_map", "         0          0 4294967295\n")
		r.file("proc/self/mountinfo", mountsHostDev)
		r.file("dev/loop-control", "")
		r.dir(HostStorage + "/overlay-images/" + testID)
		r.pid1(true)
		f, err := Detect(r.root, func(k string) string { return map[string]string{"container": "podman"}[k] })
		if err != nil {
			t.Fatal(err)
		}
		want := &Facts{InContainer: true, Markers: []string{ContainerEnvPath, "container=podman"},
			Env: f.Env, HostPID: true, CapSysAdmin: true, DevFS: "devtmpfs", LoopControl: true,
			Storage:         &Storage{GraphRoot: filepath.Join(r.root, HostStorage), Driver: "overlay", Via: "bind mount"},
			StorageSearched: []string{filepath.Join(r.root, HostStorage)}}
		if !reflect.DeepEqual(f, want) {
			t.Errorf("got %+v\nwant %+v", f, want)
		}
		if f.Env.ImageID != testID {
			t.Errorf("image ID %q", f.Env.ImageID)
		}
		if err := Check(f, Request{OwnImage: true, Loopback: true}); err != nil {
			t.Errorf("Check: %v", err)
		}
	})
	t.Run("storage through PID 1's root", func(t *testing.T) {
		r := fakeRoot{t, t.TempDir()}
		r.file(ContainerEnvPath, podman431)
		r.file("proc/self/status", capsPrivileged)
		r.file("proc/self/mountinfo", mountsHostDev)
		host := r.pid1(true)
		if err := os.MkdirAll(filepath.Join(host, HostStorage, "vfs-images", testID), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := Detect(r.root, func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		want := &Storage{GraphRoot: filepath.Join(r.root, "proc/1/root", HostStorage), Driver: "vfs", Via: "host PID 1 (--pid=host)"}
		if !reflect.DeepEqual(f.Storage, want) {
			t.Errorf("storage %+v, want %+v", f.Storage, want)
		}
	})
	t.Run("unprivileged podman, own PID namespace and /dev", func(t *testing.T) {
		r := fakeRoot{t, t.TempDir()}
		r.file(ContainerEnvPath, "")
		r.file("proc/self/status", capsDefault)
		r.file("proc/self/uid_map", "0 1000 1\n1 100000 65536\n")
		r.file("proc/self/mountinfo", mountsOwnDev)
		r.pid1(false)
		f, err := Detect(r.root, func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		if !f.InContainer || f.HostPID || f.CapSysAdmin || !f.UserNS || f.DevFS != "tmpfs" || f.LoopControl || f.Storage != nil || !f.Env.Empty() {
			t.Errorf("facts %+v", f)
		}
	})
	t.Run("btrfs storage", func(t *testing.T) {
		r := fakeRoot{t, t.TempDir()}
		r.file(ContainerEnvPath, podman431)
		r.file("proc/self/status", capsPrivileged)
		r.file("proc/self/mountinfo", mountsHostDev)
		r.dir(HostStorage + "/btrfs-images/" + testID)
		f, err := Detect(r.root, func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		if f.Storage != nil || f.UnsupportedDriver != "btrfs" {
			t.Errorf("storage %+v, unsupported %q", f.Storage, f.UnsupportedDriver)
		}
	})
	t.Run("plain host", func(t *testing.T) {
		r := fakeRoot{t, t.TempDir()}
		r.file("proc/self/status", capsPrivileged)
		r.file("proc/self/mountinfo", mountsHostDev)
		f, err := Detect(r.root, func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		if f.InContainer || f.Env != nil {
			t.Errorf("facts %+v", f)
		}
	})
	t.Run("malformed .containerenv", func(t *testing.T) {
		r := fakeRoot{t, t.TempDir()}
		r.file(ContainerEnvPath, "garbage\n")
		if _, err := Detect(r.root, func(string) string { return "" }); err == nil {
			t.Error("no error")
		}
	})
}

func TestDetectThisProcess(t *testing.T) {
	// Whatever this machine is, Detect must read it without error.
	if _, err := Detect("/", os.Getenv); err != nil {
		t.Fatal(err)
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/x\`: `/x\`, `/y\04`: `/y\04`, "/dev": "/dev"} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}
