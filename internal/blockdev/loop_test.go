package blockdev

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/bootlace/bootlace/internal/errs"
	"golang.org/x/sys/unix"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices, BLKPG and mount need root")
	}
}

func assertTarget(t *testing.T, err error) {
	t.Helper()
	if k := errs.KindOf(err); k != errs.Target {
		t.Errorf("error kind = %v, want target: %v", k, err)
	}
}

// attach makes a sparse file, attaches it and checks on cleanup that the
// loop device is gone from `losetup -a`.
func attach(t *testing.T, size int64) (*Loop, string) {
	t.Helper()
	needRoot(t)
	img := sparse(t, size)
	l, err := AttachLoop(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Detach(); err != nil {
			t.Errorf("Detach: %v", err)
		}
		out, err := exec.Command("losetup", "-a").CombinedOutput()
		if err != nil {
			t.Errorf("losetup -a: %v", err)
		}
		if strings.Contains(string(out), img) {
			t.Errorf("loop device left behind:\n%s", out)
		}
	})
	return l, img
}

func isBlock(path string) (uint64, bool) {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, false
	}
	return st.Rdev, true
}

func partitionDisk(t *testing.T, l *Loop, size uint64) []Partition {
	t.Helper()
	parts, err := PlanBootcLayout(size, 512, LayoutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteGPT(l.Path(), parts, GUID{}); err != nil {
		t.Fatal(err)
	}
	if err := AddPartitions(l.Path(), parts); err != nil {
		t.Fatal(err)
	}
	return parts
}

func TestLoopLifecycle(t *testing.T) {
	const size = 4 * GiB
	l, img := attach(t, size)
	if _, ok := isBlock(l.Path()); !ok {
		t.Fatalf("%s is not a block device", l.Path())
	}
	name := filepath.Base(l.Path())
	backing, _ := os.ReadFile(filepath.Join("/sys/class/block", name, "loop/backing_file"))
	if strings.TrimSpace(string(backing)) != img {
		t.Errorf("backing file %q, want %q", backing, img)
	}

	d, err := Inspect(l.Path())
	if err != nil {
		t.Fatal(err)
	}
	if d.Size != size || d.SectorSize != 512 || d.HasContent() || d.HoldsRoot || len(d.Mounts) > 0 {
		t.Errorf("fresh disk inspected as %+v", d)
	}
	if err := CheckUsable(d, false); err != nil {
		t.Errorf("fresh disk refused: %v", err)
	}

	var disk GUID
	disk, _ = NewGUID()
	parts, err := PlanBootcLayout(size, d.SectorSize, LayoutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteGPT(l.Path(), parts, disk); err != nil {
		t.Fatal(err)
	}
	verifyWithHostTools(t, l.Path(), parts, disk)
	for i := 0; i < 2; i++ { // the second call finds them present
		if err := AddPartitions(l.Path(), parts); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range parts {
		node := PartitionPath(l.Path(), p.Number)
		if _, ok := isBlock(node); !ok {
			t.Fatalf("%s did not appear", node)
		}
		f, err := os.Open(node)
		if err != nil {
			t.Fatal(err)
		}
		got, err := deviceSize(f)
		f.Close()
		if err != nil || got != p.Size {
			t.Errorf("%s size %d (%v), want %d", node, got, err, p.Size)
		}
	}

	d, err = Inspect(l.Path())
	if err != nil {
		t.Fatal(err)
	}
	if d.Table != "gpt" || len(d.Partitions) != len(parts) {
		t.Errorf("partitioned disk inspected as %+v", d)
	}
	for i, p := range d.Partitions {
		if p.Start != parts[i].Start || p.Size != parts[i].Size || p.Path != PartitionPath(l.Path(), i+1) {
			t.Errorf("partition %+v, want %+v", p, parts[i])
		}
	}
	err = CheckUsable(d, false)
	if err == nil || !strings.Contains(err.Error(), "pass --wipe") {
		t.Errorf("partitioned disk without --wipe: %v", err)
	}
	assertTarget(t, err)
	if err := CheckUsable(d, true); err != nil {
		t.Errorf("partitioned disk with --wipe: %v", err)
	}

	if err := l.Detach(); err != nil {
		t.Fatal(err)
	}
	if err := l.Detach(); err != nil {
		t.Errorf("second Detach: %v", err)
	}
	if _, err := os.Stat(filepath.Join("/sys/class/block", name, "loop/backing_file")); err == nil {
		t.Errorf("%s still attached", name)
	}
	if _, ok := isBlock(PartitionPath(l.Path(), 1)); ok {
		t.Errorf("%s still exists after Detach", PartitionPath(l.Path(), 1))
	}
	// The image keeps the table for a later boot.
	verifyWithHostTools(t, img, parts, disk)
}

func TestMountedPartitionRefused(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Fatal("mkfs.ext4 is needed: apt-get install e2fsprogs")
	}
	const size = 3 * GiB
	l, _ := attach(t, size)
	parts := partitionDisk(t, l, size)
	root := PartitionPath(l.Path(), len(parts))
	run(t, "mkfs.ext4", "-q", "-F", root)
	mnt := t.TempDir()
	if err := unix.Mount(root, mnt, "ext4", 0, ""); err != nil {
		t.Fatalf("mount %s: %v", root, err)
	}
	mounted := true
	t.Cleanup(func() {
		if mounted {
			if err := unix.Unmount(mnt, 0); err != nil {
				t.Errorf("unmount: %v", err)
			}
		}
	})

	d, err := Inspect(l.Path())
	if err != nil {
		t.Fatal(err)
	}
	if d.Partitions[len(parts)-1].Signature != "ext4" {
		t.Errorf("root partition signature %q", d.Partitions[len(parts)-1].Signature)
	}
	err = CheckUsable(d, true)
	want := fmt.Sprintf("unmount %s (mounted at %s)", root, mnt)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("CheckUsable = %v, want %q", err, want)
	}
	assertTarget(t, err)
	if f, err := OpenExclusive(l.Path()); err == nil {
		f.Close()
		t.Error("OpenExclusive succeeded while a partition is mounted")
	} else {
		assertTarget(t, err)
		if !strings.Contains(err.Error(), "in use") {
			t.Errorf("OpenExclusive: %v", err)
		}
	}
	if err := Wipe(l.Path()); err == nil {
		t.Error("Wipe succeeded while a partition is mounted")
	}

	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	mounted = false
	if err := Wipe(l.Path()); err != nil {
		t.Fatal(err)
	}
	d, err = Inspect(l.Path())
	if err != nil {
		t.Fatal(err)
	}
	if d.HasContent() {
		t.Errorf("after Wipe: table %q signature %q partitions %+v", d.Table, d.Signature, d.Partitions)
	}
	if _, ok := isBlock(root); ok {
		t.Errorf("%s still exists after Wipe", root)
	}
	if out, err := exec.Command("sfdisk", "-d", l.Path()).CombinedOutput(); err == nil {
		t.Errorf("sfdisk finds a table after Wipe:\n%s", out)
	}
}

func TestSwapRefused(t *testing.T) {
	if _, err := exec.LookPath("mkswap"); err != nil {
		t.Fatal("mkswap is needed: apt-get install util-linux")
	}
	const size = 3 * GiB
	l, _ := attach(t, size)
	partitionDisk(t, l, size)
	sw := PartitionPath(l.Path(), 3)
	run(t, "mkswap", sw)
	p, _ := unix.BytePtrFromString(sw)
	if _, _, e := unix.Syscall(unix.SYS_SWAPON, uintptr(unsafe.Pointer(p)), 0, 0); e != 0 {
		t.Fatalf("swapon %s: %v", sw, e)
	}
	t.Cleanup(func() {
		if _, _, e := unix.Syscall(unix.SYS_SWAPOFF, uintptr(unsafe.Pointer(p)), 0, 0); e != 0 {
			t.Errorf("swapoff %s: %v", sw, e)
		}
	})
	d, err := Inspect(l.Path())
	if err != nil {
		t.Fatal(err)
	}
	err = CheckUsable(d, true)
	if err == nil || !strings.Contains(err.Error(), "swapoff "+sw) {
		t.Errorf("CheckUsable = %v", err)
	}
}

func TestExistingContentNeedsWipe(t *testing.T) {
	tool(t, "sfdisk", "fdisk")
	tests := []struct {
		name       string
		prepare    func(t *testing.T, img string)
		table, sig string
	}{
		{"gpt by sfdisk", func(t *testing.T, img string) { sfdiskScript(t, img, "label: gpt\n,64MiB\n,\n") }, "gpt", ""},
		{"mbr by sfdisk", func(t *testing.T, img string) { sfdiskScript(t, img, "label: dos\n,64MiB,L\n") }, "dos", ""},
		{"ext4 on the whole disk", func(t *testing.T, img string) { run(t, "mkfs.ext4", "-q", "-F", img) }, "", "ext4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			needRoot(t)
			img := sparse(t, 512*MiB)
			tc.prepare(t, img)
			l, err := AttachLoop(context.Background(), img)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := l.Detach(); err != nil {
					t.Error(err)
				}
			}()
			d, err := Inspect(l.Path())
			if err != nil {
				t.Fatal(err)
			}
			if d.Table != tc.table || d.Signature != tc.sig {
				t.Errorf("table %q signature %q, want %q %q", d.Table, d.Signature, tc.table, tc.sig)
			}
			err = CheckUsable(d, false)
			if err == nil || !strings.Contains(err.Error(), "pass --wipe") {
				t.Errorf("without --wipe: %v", err)
			}
			if err := CheckUsable(d, true); err != nil {
				t.Errorf("with --wipe: %v", err)
			}
			if err := Wipe(l.Path()); err != nil {
				t.Fatal(err)
			}
			if d, err = Inspect(l.Path()); err != nil || d.HasContent() {
				t.Errorf("after Wipe: %+v %v", d, err)
			}
		})
	}
}

func sfdiskScript(t *testing.T, img, script string) {
	t.Helper()
	cmd := exec.Command("sfdisk", "-q", img)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
}

func TestHostRootRefused(t *testing.T) {
	needRoot(t)
	var st unix.Stat_t
	if err := unix.Stat("/", &st); err != nil {
		t.Fatal(err)
	}
	sys := fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
	real, err := filepath.EvalSymlinks(sys)
	if err != nil {
		t.Skipf("/ is not on a block device (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(real, "partition")); err == nil {
		real = filepath.Dir(real)
	}
	dev := "/dev/" + filepath.Base(real)
	if _, ok := isBlock(dev); !ok {
		t.Skipf("no node %s for the root disk", dev)
	}
	d, err := Inspect(dev)
	if err != nil {
		t.Fatal(err)
	}
	if !d.HoldsRoot {
		t.Errorf("%s holds / but Inspect says it does not", dev)
	}
	err = CheckUsable(d, true)
	if err == nil || !strings.Contains(err.Error(), "holds the running system's root filesystem") {
		t.Errorf("CheckUsable(%s) = %v", dev, err)
	}
	assertTarget(t, err)
}

func TestInspectRejects(t *testing.T) {
	needRoot(t)
	img := sparse(t, MiB)
	if _, err := Inspect(img); err == nil || errs.KindOf(err) != errs.Target {
		t.Errorf("Inspect(regular file) = %v", err)
	}
	const size = 3 * GiB
	l, _ := attach(t, size)
	partitionDisk(t, l, size)
	if _, err := Inspect(PartitionPath(l.Path(), 2)); err == nil || !strings.Contains(err.Error(), "not a whole disk") {
		t.Errorf("Inspect(partition) = %v", err)
	}
}

func TestAttachConcurrent(t *testing.T) {
	needRoot(t)
	const n = 4
	var wg sync.WaitGroup
	loops := make([]*Loop, n)
	errs := make([]error, n)
	for i := range n {
		img := sparse(t, 64*MiB)
		wg.Add(1)
		go func() {
			defer wg.Done()
			loops[i], errs[i] = AttachLoop(context.Background(), img)
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Error(errs[i])
			continue
		}
		if seen[loops[i].Path()] {
			t.Errorf("%s handed out twice", loops[i].Path())
		}
		seen[loops[i].Path()] = true
	}
	for _, l := range loops {
		if l != nil {
			if err := l.Detach(); err != nil {
				t.Error(err)
			}
		}
	}
}

func TestAttachLoopErrors(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := AttachLoop(ctx, sparse(t, MiB)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	if _, err := AttachLoop(context.Background(), t.TempDir()); err == nil {
		t.Error("attaching a directory succeeded")
	}
	if _, err := AttachLoop(context.Background(), "/nonexistent/disk.img"); err == nil {
		t.Error("attaching a missing file succeeded")
	}
}
