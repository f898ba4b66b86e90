package sandbox_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bootlace/bootlace/internal/sandbox"
)

func TestMain(m *testing.M) {
	// The test binary is re-executed as the sandbox helper.
	sandbox.Init()
	os.Exit(m.Run())
}

const busybox = "/bin/busybox"

var applets = []string{"sh", "cat", "ls", "echo", "env", "hostname", "sleep", "true", "false", "touch", "test", "mkdir", "wc", "grep", "readlink", "tail", "cut", "tr", "head", "id"}

// needRoot skips where namespaces and mounts cannot be made: the sandbox
// requires root by design.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the sandbox needs root (mount and PID namespaces)")
	}
}

// newImage builds a small ostree-style image tree around a static busybox:
// /usr/bin holds the tools, /bin is a symlink, /etc lives in /usr/etc.
func newImage(t *testing.T) string {
	t.Helper()
	bb, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatalf("tests need a static busybox at %s (apt-get install busybox-static): %v", busybox, err)
	}
	root := t.TempDir()
	for _, d := range []string{"usr/bin", "usr/sbin", "usr/etc", "var/tmp", "sysroot", "data"} {
		must(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	must(t, os.WriteFile(filepath.Join(root, "usr/bin/busybox"), bb, 0o755))
	for _, a := range applets {
		must(t, os.Symlink("busybox", filepath.Join(root, "usr/bin", a)))
	}
	// An absolute link must resolve inside the image, not on the host.
	must(t, os.MkdirAll(filepath.Join(root, "usr/lib"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "usr/lib/tool.sh"), []byte("#!/bin/sh\necho \"$@\"\n"), 0o755))
	must(t, os.Symlink("/usr/lib/tool.sh", filepath.Join(root, "usr/sbin/abs-tool")))
	must(t, os.Symlink("usr/bin", filepath.Join(root, "bin")))
	must(t, os.Symlink("usr/sbin", filepath.Join(root, "sbin")))
	must(t, os.WriteFile(filepath.Join(root, "usr/etc/passwd"), []byte("root:x:0:0:image-root:/root:/bin/sh\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "marker"), []byte("from-image\n"), 0o644))
	return root
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func output(t *testing.T, spec sandbox.Spec) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	spec.Stderr = &stderr
	out, err := sandbox.Output(ctx, spec)
	if err != nil {
		t.Fatalf("%v: %v (stderr %q)", spec.Args, err, stderr.String())
	}
	return string(out)
}

func TestIsolation(t *testing.T) {
	needRoot(t)
	root := newImage(t)
	hostOnly := filepath.Join(t.TempDir(), "host-only")
	must(t, os.WriteFile(hostOnly, []byte("x"), 0o644))

	tests := []struct {
		name string
		args []string
		want func(out string) error
	}{
		{"reads the image", []string{"cat", "/marker"}, equal("from-image\n")},
		{"etc from usr/etc", []string{"cat", "/etc/passwd"}, contains("image-root")},
		{"host file invisible", []string{"sh", "-c", "test -e " + hostOnly + " && echo visible || echo hidden"}, equal("hidden\n")},
		{"top level", []string{"ls", "/"}, equal(lines("bin", "data", "dev", "etc", "marker", "proc", "run", "sbin", "sys", "sysroot", "tmp", "usr", "var"))},
		{"hostname", []string{"hostname"}, equal(sandbox.Hostname + "\n")},
		{"env cleared", []string{"env"}, equal(lines(sandbox.DefaultEnv()...))},
		{"only lo", []string{"sh", "-c", "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"}, equal("lo\n")},
		{"own pid namespace", []string{"sh", "-c", "echo $$; ls /proc | grep -c '^[0-9]'"}, func(out string) error {
			// PIDs are small (the helper's Go runtime uses a few for
			// probes) and only the helper, sh, ls and grep exist; grep may
			// not be forked yet when ls reads /proc.
			f := strings.Fields(out)
			if len(f) != 2 || atoi(f[0]) > 10 || atoi(f[1]) < 3 || atoi(f[1]) > 4 {
				return fmt.Errorf("want a small PID and 3 or 4 processes, got %q", out)
			}
			return nil
		}},
		{"helper is pid 1", []string{"cat", "/proc/1/cmdline"}, equal("bootlace-sandbox\x00")},
		{"absolute symlink resolved in the image", []string{"abs-tool", "ok"}, equal("ok\n")},
		{"image is read-only", []string{"sh", "-c", "touch /usr/x 2>/dev/null || echo ro; touch /new 2>/dev/null || echo ro; touch /tmp/x /run/x /var/tmp/x && echo rw"}, equal("ro\nro\nrw\n")},
		{"minimal dev", []string{"sh", "-c", "echo x > /dev/null && ls /dev"}, equal(lines("fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty", "urandom", "zero"))},
		{"sys read-only", []string{"sh", "-c", "test -d /sys/class && touch /sys/x 2>/dev/null || echo ro"}, equal("ro\n")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := output(t, sandbox.Spec{Root: root, Args: tt.args})
			if err := tt.want(out); err != nil {
				t.Error(err)
			}
		})
	}
}

func equal(want string) func(string) error {
	return func(got string) error {
		if got != want {
			return fmt.Errorf("got %q, want %q", got, want)
		}
		return nil
	}
}

func contains(want string) func(string) error {
	return func(got string) error {
		if !strings.Contains(got, want) {
			return fmt.Errorf("got %q, want it to contain %q", got, want)
		}
		return nil
	}
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1 << 31
	}
	return n
}

func lines(l ...string) string { return strings.Join(l, "\n") + "\n" }

func TestDevices(t *testing.T) {
	needRoot(t)
	root := newImage(t)
	out := output(t, sandbox.Spec{Root: root, Args: []string{"sh", "-c", "test -e /dev/loop-control && echo host-dev"}, Devices: true})
	if out != "host-dev\n" {
		t.Errorf("with Devices, /dev/loop-control should be visible; got %q", out)
	}
}

func TestBinds(t *testing.T) {
	needRoot(t)
	root := newImage(t)
	rw := t.TempDir()
	ro := t.TempDir()
	must(t, os.WriteFile(filepath.Join(ro, "f"), []byte("read-me"), 0o644))
	sub := filepath.Join(rw, "nested")
	must(t, os.Mkdir(sub, 0o755))
	// A mount below the rw source: seen only with Recursive.
	inner := t.TempDir()
	must(t, os.WriteFile(filepath.Join(inner, "inner"), []byte("i"), 0o644))
	if err := exec.Command("mount", "--bind", inner, sub).Run(); err != nil {
		t.Fatalf("mount --bind: %v", err)
	}
	defer exec.Command("umount", sub).Run()

	binds := []sandbox.Bind{
		{Source: rw, Target: "/sysroot", Recursive: true},                         // existing dir in a read-only image dir
		{Source: ro, Target: "/run/ro/deep", ReadOnly: true},                      // created on the /run tmpfs
		{Source: rw, Target: "/flat"},                                             // created on the root tmpfs, not recursive
		{Source: filepath.Join(ro, "f"), Target: "/sysroot/file", ReadOnly: true}, // a file, nested in an earlier bind
	}
	script := `echo written > /sysroot/out && cat /run/ro/deep/f && echo && ` +
		`(touch /run/ro/deep/g 2>/dev/null || echo ro) && cat /sysroot/file && echo && ` +
		`cat /sysroot/nested/inner && echo && (test -e /flat/nested/inner || echo flat)`
	out := output(t, sandbox.Spec{Root: root, Args: []string{"sh", "-c", script}, Binds: binds})
	if want := "read-me\nro\nread-me\ni\nflat\n"; out != want {
		t.Errorf("got %q, want %q", out, want)
	}
	if b, err := os.ReadFile(filepath.Join(rw, "out")); err != nil || string(b) != "written\n" {
		t.Errorf("rw bind write not visible on the host: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(ro, "g")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("read-only bind was written: %v", err)
	}
}

func TestBindUnderReadOnlyImageDir(t *testing.T) {
	needRoot(t)
	root := newImage(t)
	err := sandbox.Run(context.Background(), sandbox.Spec{
		Root:  root,
		Args:  []string{"true"},
		Binds: []sandbox.Bind{{Source: t.TempDir(), Target: "/usr/lib/missing"}},
	})
	if err == nil || !strings.Contains(err.Error(), "read-only directory of the image") {
		t.Fatalf("want a read-only mount point error, got %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "usr/lib/missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the image was modified: %v", err)
	}
}

// snapshot lists every path of a tree with its mode, size and mtime.
func snapshot(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v %d %d\n", p, fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		return nil
	})
	must(t, err)
	return b.String()
}

func mountinfo(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	must(t, err)
	return string(b)
}

func TestLeavesNothing(t *testing.T) {
	needRoot(t)
	root := newImage(t)
	before, mounts := snapshot(t, root), mountinfo(t)
	output(t, sandbox.Spec{
		Root:    root,
		Args:    []string{"sh", "-c", "mkdir -p /run/a /tmp/b /var/tmp/c && sleep 3217 & echo started"},
		Binds:   []sandbox.Bind{{Source: t.TempDir(), Target: "/sysroot"}, {Source: t.TempDir(), Target: "/new/dir"}},
		Devices: true,
	})
	if after := snapshot(t, root); after != before {
		t.Errorf("the image tree changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if after := mountinfo(t); after != mounts {
		t.Errorf("host mounts changed:\nbefore:\n%s\nafter:\n%s", mounts, after)
	}
	// The backgrounded sleep died with the PID namespace.
	if pids := findProcs(t, "sleep\x003217\x00"); len(pids) != 0 {
		t.Errorf("processes left behind: %v", pids)
	}
}

// findProcs returns the host PIDs whose command line is exactly cmdline.
func findProcs(t *testing.T, cmdline string) []string {
	t.Helper()
	dirs, err := os.ReadDir("/proc")
	must(t, err)
	var pids []string
	for _, d := range dirs {
		if b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline")); err == nil && string(b) == cmdline {
			st, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "status"))
			pids = append(pids, d.Name()+": "+string(st))
		}
	}
	sort.Strings(pids)
	return pids
}

func TestCancelKillsSandbox(t *testing.T) {
	needRoot(t)
	root := newImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := sandbox.Run(ctx, sandbox.Spec{Root: root, Args: []string{"sh", "-c", "sleep 4321 & sleep 4321"}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("want a deadline error, got %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("cancel took %v", d)
	}
	if pids := findProcs(t, "sleep\x004321\x00"); len(pids) != 0 {
		t.Errorf("processes left behind: %v", pids)
	}
}

func TestExitStatus(t *testing.T) {
	needRoot(t)
	root := newImage(t)
	var stderr bytes.Buffer
	err := sandbox.Run(context.Background(), sandbox.Spec{
		Root:   root,
		Args:   []string{"sh", "-c", "echo first >&2; echo boom >&2; exit 3"},
		Stderr: &stderr,
	})
	var ee *sandbox.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("want an ExitError, got %v", err)
	}
	if ee.Code != 3 || ee.Root != root {
		t.Errorf("got code %d root %s", ee.Code, ee.Root)
	}
	for _, s := range []string{"sh -c", "boom", "first", "status 3", root} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q lacks %q", err, s)
		}
	}
	if stderr.String() != "first\nboom\n" {
		t.Errorf("stderr not passed through: %q", stderr.String())
	}

	err = sandbox.Run(context.Background(), sandbox.Spec{Root: root, Args: []string{"sh", "-c", "kill -9 $$"}})
	if !errors.As(err, &ee) || ee.Signal != 9 {
		t.Errorf("want death by signal 9, got %v", err)
	}
}

func TestStdinAndDir(t *testing.T) {
	needRoot(t)
	root := newImage(t)
	out := output(t, sandbox.Spec{Root: root, Args: []string{"sh", "-c", "pwd; wc -c"}, Dir: "/usr/etc", Stdin: strings.NewReader("12345")})
	if out != "/usr/etc\n5\n" {
		t.Errorf("got %q", out)
	}
	env := []string{"PATH=/bin", "FOO=bar"}
	if out := output(t, sandbox.Spec{Root: root, Args: []string{"env"}, Env: env}); out != lines(env...) {
		t.Errorf("env: got %q", out)
	}
}

func TestNotFound(t *testing.T) {
	needRoot(t)
	root := newImage(t)
	tests := []struct {
		name string
		args []string
		env  []string
	}{
		{"missing", []string{"mkfs.ext4", "/dev/x"}, nil},
		{"not on PATH", []string{"busybox"}, []string{"PATH=/sbin"}},
		{"path missing", []string{"/usr/bin/nope"}, nil},
		{"host-only tool", []string{"go"}, []string{"PATH=/usr/local/go/bin"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := sandbox.Run(context.Background(), sandbox.Spec{Root: root, Args: tt.args, Env: tt.env})
			if !errors.Is(err, sandbox.ErrNotFound) {
				t.Fatalf("want ErrNotFound, got %v", err)
			}
			var nf *sandbox.NotFoundError
			if !errors.As(err, &nf) || nf.Command != tt.args[0] || nf.Root != root {
				t.Fatalf("want a NotFoundError for %s in %s, got %#v", tt.args[0], root, err)
			}
			if !strings.Contains(err.Error(), tt.args[0]+" not found in the image at "+root) {
				t.Errorf("error %q must name the command and the image", err)
			}
		})
	}
}

func TestBadSpec(t *testing.T) {
	root := t.TempDir()
	tests := []struct {
		name string
		spec sandbox.Spec
	}{
		{"no args", sandbox.Spec{Root: root}},
		{"relative root", sandbox.Spec{Root: "img", Args: []string{"true"}}},
		{"missing root", sandbox.Spec{Root: filepath.Join(root, "nope"), Args: []string{"true"}}},
		{"relative dir", sandbox.Spec{Root: root, Args: []string{"true"}, Dir: "x"}},
		{"relative bind", sandbox.Spec{Root: root, Args: []string{"true"}, Binds: []sandbox.Bind{{Source: "a", Target: "/b"}}}},
		{"bind over root", sandbox.Spec{Root: root, Args: []string{"true"}, Binds: []sandbox.Bind{{Source: root, Target: "/"}}}},
		{"missing bind source", sandbox.Spec{Root: root, Args: []string{"true"}, Binds: []sandbox.Bind{{Source: "/nonexistent-bootlace", Target: "/b"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := sandbox.Run(context.Background(), tt.spec); err == nil {
				t.Error("want an error")
			}
		})
	}
	if _, err := sandbox.Output(context.Background(), sandbox.Spec{Root: root, Args: []string{"true"}, Stdout: os.Stdout}); err == nil {
		t.Error("Output with Stdout set: want an error")
	}
}

func TestMissingWorkingDir(t *testing.T) {
	needRoot(t)
	root := newImage(t)
	err := sandbox.Run(context.Background(), sandbox.Spec{Root: root, Args: []string{"true"}, Dir: "/nowhere"})
	if err == nil || !strings.Contains(err.Error(), "/nowhere") {
		t.Errorf("want an error naming the directory, got %v", err)
	}
}

// TestOverhead logs the cost of one sandboxed `true`; the bench numbers are
// for reports, not pass/fail.
func TestOverhead(t *testing.T) {
	needRoot(t)
	root := newImage(t)
	const n = 20
	start := time.Now()
	for range n {
		if err := sandbox.Run(context.Background(), sandbox.Spec{Root: root, Args: []string{"true"}}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("one sandboxed `true`: %.1f ms", float64(time.Since(start).Microseconds())/n/1000)
}

func BenchmarkRunTrue(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("the sandbox needs root")
	}
	root := b.TempDir()
	bb, err := os.ReadFile(busybox)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "usr/bin/true"), bb, 0o755); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := sandbox.Run(context.Background(), sandbox.Spec{Root: root, Args: []string{"true"}}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDynamicTools runs the host's dynamically linked tools from a tree whose
// /usr is a bind of the host's /usr: the loader and libraries must come from
// the tree through the usr-merge symlinks, and a mount inside Root must be
// carried into the sandbox.
func TestDynamicTools(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	must(t, os.Mkdir(filepath.Join(root, "usr"), 0o755))
	must(t, os.Mkdir(filepath.Join(root, "etc"), 0o755))
	for _, l := range []string{"bin", "sbin", "lib", "lib64"} {
		if target, err := os.Readlink("/" + l); err == nil {
			must(t, os.Symlink(target, filepath.Join(root, l)))
		}
	}
	must(t, os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\n"), 0o644))
	usr := filepath.Join(root, "usr")
	if out, err := exec.Command("mount", "--bind", "-o", "ro", "/usr", usr).CombinedOutput(); err != nil {
		t.Fatalf("mount --bind /usr: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", usr).Run() })

	out := output(t, sandbox.Spec{Root: root, Args: []string{"sh", "-c", "id -un && ls -d /usr/lib/*-linux-gnu | head -1 && mkfs.ext4 -V 2>&1 | head -1"}})
	f := strings.Split(strings.TrimSpace(out), "\n")
	if len(f) != 3 || f[0] != "root" || !strings.HasPrefix(f[2], "mke2fs") {
		t.Errorf("got %q", out)
	}
}

// TestHostRoot covers the in-container mode, where the image is the running
// root itself.
func TestHostRoot(t *testing.T) {
	needRoot(t)
	out := output(t, sandbox.Spec{Root: "/", Args: []string{"sh", "-c", "hostname; test -d /usr/local/go && echo same-tree"}})
	if out != sandbox.Hostname+"\nsame-tree\n" {
		t.Errorf("got %q", out)
	}
}

// TestParentDeath kills a process in the middle of Run and checks that its
// sandbox dies with it (Pdeathsig and PID namespace teardown).
func TestParentDeath(t *testing.T) {
	needRoot(t)
	if os.Getenv("SANDBOX_TEST_PARENT") != "" {
		// The doomed parent: announce the sandbox, then block in Run.
		err := sandbox.Run(context.Background(), sandbox.Spec{
			Root:   os.Getenv("SANDBOX_TEST_PARENT"),
			Args:   []string{"sh", "-c", "echo ready; exec sleep 5173"},
			Stdout: os.Stdout,
		})
		t.Fatalf("Run returned: %v", err)
	}
	root := newImage(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestParentDeath$")
	cmd.Env = append(os.Environ(), "SANDBOX_TEST_PARENT="+root)
	stdout, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	buf := make([]byte, 6)
	if _, err := io.ReadFull(stdout, buf); err != nil || string(buf) != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the sandbox did not start: %q %v", buf, err)
	}
	// "ready" comes just before the shell execs sleep.
	for start := time.Now(); len(findProcs(t, "sleep\x005173\x00")) != 1; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > 3*time.Second {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("the sandboxed sleep did not start")
		}
	}
	must(t, cmd.Process.Kill())
	cmd.Wait()
	deadline := time.Now().Add(3 * time.Second)
	for len(findProcs(t, "sleep\x005173\x00")) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the sandbox outlived its parent")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestConcurrentRuns(t *testing.T) {
	needRoot(t)
	root := newImage(t)
	errc := make(chan error, 8)
	for i := range cap(errc) {
		go func() {
			out, err := sandbox.Output(context.Background(), sandbox.Spec{Root: root, Args: []string{"echo", strconv.Itoa(i)}})
			if err == nil && string(out) != strconv.Itoa(i)+"\n" {
				err = fmt.Errorf("run %d got %q", i, out)
			}
			errc <- err
		}()
	}
	for range cap(errc) {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}
