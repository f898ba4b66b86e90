package install

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/esp"
	"github.com/bootlace/bootlace/internal/event"
	"github.com/bootlace/bootlace/internal/kargs"
	"github.com/bootlace/bootlace/internal/mount"
)

func TestInheritRootKargs(t *testing.T) {
	tests := []struct {
		name, cmdline string
		root          string
		extra         []string
		ok            bool
	}{
		{name: "plain", cmdline: "BOOT_IMAGE=/vmlinuz-6.1 root=UUID=1234 ro quiet", root: "UUID=1234", ok: true},
		{name: "LVM and LUKS", cmdline: "root=/dev/mapper/vg-root ro rd.lvm.lv=vg/root rd.luks.uuid=luks-abcd resume=/dev/vg/swap rhgb",
			root: "/dev/mapper/vg-root", extra: []string{"rd.lvm.lv=vg/root", "rd.luks.uuid=luks-abcd"}, ok: true},
		{name: "rootflags first, then every rd.* in order", cmdline: "rd.md.uuid=1 root=LABEL=r rootflags=subvol=root rootflags=ignored rd.neednet=1 ip=dhcp",
			root: "LABEL=r", extra: []string{"rootflags=subvol=root", "rd.md.uuid=1", "rd.neednet=1"}, ok: true},
		{name: "the first root= wins", cmdline: "root=/dev/sda2 root=/dev/sdb2", root: "/dev/sda2", ok: true},
		{name: "quoted value kept as the kernel shows it", cmdline: `root=UUID=1 rd.break="pre mount"`, root: "UUID=1", extra: []string{`rd.break="pre mount"`}, ok: true},
		{name: "rd without dot and rootfstype are not inherited", cmdline: "root=/dev/vda rdinit=/init rootfstype=ext4 rd.shell", root: "/dev/vda", extra: []string{"rd.shell"}, ok: true},
		{name: "no root= inherits nothing", cmdline: "console=ttyS0 rd.lvm.lv=vg/root rootflags=x", ok: false},
		{name: "empty", cmdline: "", ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, extra, ok := inheritRootKargs(kargs.Parse(tt.cmdline))
			if root != tt.root || ok != tt.ok || !reflect.DeepEqual(extra, tt.extra) {
				t.Errorf("got (%q, %q, %v), want (%q, %q, %v)", root, extra, ok, tt.root, tt.extra, tt.ok)
			}
		})
	}
}

func TestWipeBlockers(t *testing.T) {
	m := func(targets ...string) []mount.Info {
		var out []mount.Info
		for _, tg := range targets {
			out = append(out, mount.Info{Target: tg})
		}
		return out
	}
	tests := []struct {
		name   string
		root   string
		mounts []mount.Info
		want   []string
	}{
		{name: "root alone", root: "/mnt", mounts: m("/", "/mnt"), want: nil},
		{name: "separate boot and ESP are part of the target", root: "/mnt", mounts: m("/mnt", "/mnt/boot", "/mnt/boot/efi"), want: nil},
		{name: "other mounts block, sorted and once", root: "/mnt/", mounts: m("/mnt", "/mnt/var", "/mnt/home", "/mnt/var"), want: []string{"/mnt/home", "/mnt/var"}},
		{name: "below the ESP blocks", root: "/mnt", mounts: m("/mnt/boot/efi/x"), want: []string{"/mnt/boot/efi/x"}},
		{name: "siblings with a common prefix do not", root: "/mnt", mounts: m("/mnt2", "/mnt2/boot", "/mntx/var"), want: nil},
		{name: "a bound host root", root: "/target", mounts: m("/target", "/target/proc", "/target/dev", "/target/boot"), want: []string{"/target/dev", "/target/proc"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := wipeBlockers(tt.root, tt.mounts); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMountPointIn(t *testing.T) {
	tab := []mount.Info{
		{Major: 8, Minor: 1, Root: "/EFI", Target: "/srv/efi-sub"},
		{Major: 8, Minor: 1, Root: "/", Target: "/boot/efi"},
		{Major: 8, Minor: 2, Root: "/", Target: "/"},
	}
	for _, tt := range []struct {
		major, minor uint32
		want         string
	}{{8, 1, "/boot/efi"}, {8, 2, "/"}, {8, 3, ""}} {
		if got := mountPointIn(tab, tt.major, tt.minor); got != tt.want {
			t.Errorf("%d:%d: got %q, want %q", tt.major, tt.minor, got, tt.want)
		}
	}
}

// TestCountdown runs the booted-root wait with short durations: it warns
// with the time left and an interrupt ends it at once with exit 130.
func TestCountdown(t *testing.T) {
	var rec event.Recorder
	em := event.Emitter{Sink: &rec, Phase: "resolve"}
	start := time.Now()
	if err := countdown(context.Background(), em, 40*time.Millisecond, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Errorf("countdown returned after %s, want at least 40ms", d)
	}
	var warnings int
	for _, e := range rec.Events() {
		if e.Type == event.Warning && strings.Contains(e.Msg, "continuing in") {
			warnings++
		}
	}
	if warnings != 3 {
		t.Errorf("%d countdown warnings, want 3: %+v", warnings, rec.Events())
	}

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	start = time.Now()
	err := countdown(ctx, em, time.Hour, time.Minute)
	if errs.KindOf(err) != errs.Interrupted {
		t.Fatalf("interrupted countdown: %v (kind %v), want interrupted", err, errs.KindOf(err))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("interrupt took %s", d)
	}
	if !strings.Contains(bootedRootWarning("/target", DestructiveDelay), "continuing in 20s") {
		t.Errorf("warning %q does not name the 20 s wait", bootedRootWarning("/target", DestructiveDelay))
	}
}

func TestCheckNotOstree(t *testing.T) {
	for _, p := range []string{"", "ostree/repo", "sysroot/ostree", "ostree/deploy"} {
		root := t.TempDir()
		mustWrite(t, filepath.Join(root, "etc/os-release"), "ID=debian\n")
		if p != "" {
			if err := os.MkdirAll(filepath.Join(root, p), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		err := checkNotOstree(root)
		if (p == "") != (err == nil) {
			t.Errorf("%q: %v", p, err)
		}
		if err != nil && errs.KindOf(err) != errs.Target {
			t.Errorf("%q: kind %v", p, errs.KindOf(err))
		}
	}
}

func mustWrite(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounts and loop devices need root")
	}
}

func sh(t *testing.T, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// mountTmpfs mounts a tmpfs at dir until the test ends.
func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sh(t, "mount", "-t", "tmpfs", "tmpfs", dir)
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
}

// listTree returns every path below dir, relative, sorted.
func listTree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// TestEmptyDirNeverCrossesMounts: a tmpfs and a bind mount of the same
// filesystem (same st_dev, different mount) below the directory are never
// entered, and symlinks are removed, not followed.
func TestEmptyDirNeverCrossesMounts(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	root, outside := filepath.Join(base, "root"), filepath.Join(base, "outside")
	mountTmpfs(t, root)
	mustWrite(t, filepath.Join(outside, "precious"), "keep")
	mustWrite(t, filepath.Join(root, "file"), "x")
	mustWrite(t, filepath.Join(root, "dir/sub/file"), "x")
	mustWrite(t, filepath.Join(root, "lost+found/x"), "x")
	// The bind's source is kept (in lost+found), so any file missing from it
	// afterwards was removed through the bind.
	mustWrite(t, filepath.Join(root, "lost+found/bind-source/data"), "on root's own filesystem")
	if err := os.Symlink(outside, filepath.Join(root, "link-out")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "precious"), filepath.Join(root, "dir/link-file")); err != nil {
		t.Fatal(err)
	}
	// A tmpfs deep below, and a bind of part of root's own filesystem.
	mountTmpfs(t, filepath.Join(root, "deep/er/mnt"))
	mustWrite(t, filepath.Join(root, "deep/er/mnt/other-fs"), "x")
	if err := os.MkdirAll(filepath.Join(root, "bind"), 0o755); err != nil {
		t.Fatal(err)
	}
	sh(t, "mount", "--bind", filepath.Join(root, "lost+found/bind-source"), filepath.Join(root, "bind"))
	t.Cleanup(func() { _ = exec.Command("umount", "-l", filepath.Join(root, "bind")).Run() })

	// Refusing: stops at the first mount, whatever it is.
	var hit string
	err := emptyDir(root, []string{"lost+found"}, func(p string) error { hit = p; return errors.New("refused") })
	if err == nil || (hit != filepath.Join(root, "bind") && hit != filepath.Join(root, "deep/er/mnt")) {
		t.Fatalf("emptyDir with mounts below: err %v at %q", err, hit)
	}
	if data, err := os.ReadFile(filepath.Join(root, "bind/data")); err != nil || string(data) != "on root's own filesystem" {
		t.Errorf("bind mount content: %q %v", data, err)
	}

	// Skipping: everything else goes; mount points and their parents stay.
	var skipped []string
	if err := emptyDir(root, []string{"lost+found"}, func(p string) error { skipped = append(skipped, p); return nil }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(skipped)
	if want := []string{filepath.Join(root, "bind"), filepath.Join(root, "deep/er/mnt")}; !reflect.DeepEqual(skipped, want) {
		t.Errorf("skipped %q, want %q", skipped, want)
	}
	want := []string{"bind", "bind/data", "deep", "deep/er", "deep/er/mnt", "deep/er/mnt/other-fs",
		"lost+found", "lost+found/bind-source", "lost+found/bind-source/data", "lost+found/x"}
	if got := listTree(t, root); !reflect.DeepEqual(got, want) {
		t.Errorf("left %q, want %q", got, want)
	}
	if data, err := os.ReadFile(filepath.Join(outside, "precious")); err != nil || string(data) != "keep" {
		t.Errorf("a symlink was followed: outside file %q %v", data, err)
	}
}

// loopDisk is a disk image on a loop device with GPT: an ESP (FAT, made by
// the host's mkfs.fat) and an ext4 root, mounted, holding an old system.
type loopDisk struct {
	loop, esp, root string
}

func newLoopDisk(t *testing.T) *loopDisk {
	t.Helper()
	needRoot(t)
	dir, err := os.MkdirTemp("/var/tmp", "bootlace-replace-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	img := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 400<<20); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sfdisk", "-q", img)
	cmd.Stdin = strings.NewReader("label: gpt\nsize=64MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\nsize=128MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\ntype=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	d := &loopDisk{loop: strings.TrimSpace(sh(t, "losetup", "--show", "-f", "-P", img))}
	t.Cleanup(func() {
		_ = exec.Command("partx", "-d", d.loop).Run()
		if out, err := exec.Command("losetup", "-d", d.loop).CombinedOutput(); err != nil {
			t.Errorf("detaching %s: %v %s", d.loop, err, out)
		}
	})
	if _, err := os.Stat(d.loop + "p1"); err != nil {
		sh(t, "partx", "-a", d.loop)
	}
	d.esp = d.loop + "p1"
	sh(t, "mkfs.vfat", "-F", "16", "-n", "ESP", d.esp)
	sh(t, "mkfs.ext4", "-q", d.loop+"p2")
	sh(t, "mkfs.ext4", "-q", d.loop+"p3")
	d.root = filepath.Join(dir, "mnt")
	if err := os.MkdirAll(d.root, 0o755); err != nil {
		t.Fatal(err)
	}
	sh(t, "mount", d.loop+"p3", d.root)
	t.Cleanup(func() { _ = exec.Command("umount", "-R", d.root).Run() })
	// The old system: a marker, a kernel and GRUB's configuration in /boot,
	// and a distribution's boot loader on the ESP.
	mustWrite(t, filepath.Join(d.root, "etc/old-system-marker"), "old\n")
	mustWrite(t, filepath.Join(d.root, "usr/bin/old-tool"), "#!/bin/sh\n")
	mustWrite(t, filepath.Join(d.root, "boot/vmlinuz-6.1.0-old"), "kernel")
	mustWrite(t, filepath.Join(d.root, "boot/grub/grub.cfg"), "menuentry old {}\n")
	efi := filepath.Join(dir, "grubx64.efi")
	mustWrite(t, efi, "old loader")
	sh(t, "mmd", "-i", d.esp, "::EFI", "::EFI/debian")
	sh(t, "mcopy", "-i", d.esp, efi, "::EFI/debian/grubx64.efi")
	return d
}

// separateBoot mounts the second partition at root/boot with old content.
func (d *loopDisk) separateBoot(t *testing.T) {
	t.Helper()
	boot := filepath.Join(d.root, "boot")
	if err := os.RemoveAll(boot); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(boot, 0o755); err != nil {
		t.Fatal(err)
	}
	sh(t, "mount", d.loop+"p2", boot)
	mustWrite(t, filepath.Join(boot, "vmlinuz-6.1.0-old"), "kernel")
	mustWrite(t, filepath.Join(boot, "loader/entries/old.conf"), "title old\n")
}

// TestWipeOnLoop wipes a root with a separate /boot and the ESP's mount
// point below it; lost+found stays, nothing on the ESP changes, and a
// mount elsewhere below root refuses the wipe before anything is removed.
func TestWipeOnLoop(t *testing.T) {
	d := newLoopDisk(t)
	d.separateBoot(t)
	// The ESP stand-in at boot/efi (the kernel here may lack vfat).
	mountTmpfs(t, filepath.Join(d.root, "boot/efi"))
	mustWrite(t, filepath.Join(d.root, "boot/efi/EFI/debian/grubx64.efi"), "old loader")

	mountTmpfs(t, filepath.Join(d.root, "var"))
	mustWrite(t, filepath.Join(d.root, "var/lib/data"), "x")
	err := checkWipe(d.root, false)
	if errs.KindOf(err) != errs.Target || !strings.Contains(err.Error(), filepath.Join(d.root, "var")) {
		t.Fatalf("checkWipe with /var mounted: %v", err)
	}
	if !exists(filepath.Join(d.root, "etc/old-system-marker")) {
		t.Fatal("a refused wipe removed files")
	}
	sh(t, "umount", filepath.Join(d.root, "var"))

	if err := checkWipe(d.root, true); errs.KindOf(err) != errs.Target {
		t.Errorf("wipe of the booted root: %v", err)
	}
	if err := checkWipe(d.root, false); err != nil {
		t.Fatal(err)
	}
	if err := wipe(d.root); err != nil {
		t.Fatal(err)
	}
	if got, want := listTree(t, d.root), []string{"boot", "boot/efi", "boot/efi/EFI", "boot/efi/EFI/debian", "boot/efi/EFI/debian/grubx64.efi", "boot/lost+found", "lost+found"}; !reflect.DeepEqual(got, want) {
		t.Errorf("after wipe: %q, want %q", got, want)
	}
}

// TestAlongsideOnLoop clears /boot of an existing system (on the root
// filesystem) and its ESP, the way the deploy and boot loader phases do,
// keeping the old root.
func TestAlongsideOnLoop(t *testing.T) {
	d := newLoopDisk(t)
	if err := checkNotOstree(d.root); err != nil {
		t.Fatal(err)
	}
	if err := cleanBootAlongside(d.root); err != nil {
		t.Fatal(err)
	}
	got := listTree(t, d.root)
	for _, p := range []string{"etc/old-system-marker", "usr/bin/old-tool", "boot", "lost+found"} {
		if !slices.Contains(got, p) {
			t.Errorf("%s is gone: %q", p, got)
		}
	}
	for _, p := range []string{"boot/vmlinuz-6.1.0-old", "boot/grub"} {
		if slices.Contains(got, p) {
			t.Errorf("%s is still there", p)
		}
	}
	disk, espDev := findDisk(d.root)
	if disk != d.loop || espDev != d.esp {
		t.Fatalf("findDisk: %q %q, want %q %q", disk, espDev, d.loop, d.esp)
	}
	if err := writeESP(event.Emitter{}, espDev, "", true, []byte("new loader")); err != nil {
		t.Fatal(err)
	}
	if data, err := esp.ReadFile(espDev, "EFI/BOOT/BOOTX64.EFI"); err != nil || string(data) != "new loader" {
		t.Errorf("BOOTX64.EFI: %q %v", data, err)
	}
	if out := sh(t, "mdir", "-i", espDev, "-/", "-b", "::"); strings.Contains(out, "debian") {
		t.Errorf("the old boot loader is still on the ESP:\n%s", out)
	}
	sh(t, "fsck.vfat", "-n", espDev)
}

// TestWriteESPThroughMount: an ESP the host has mounted is emptied and
// written through the mount, never through the device under it (a tmpfs
// stands in for the FAT mount, which this kernel may not support; the
// device must stay untouched).
func TestWriteESPThroughMount(t *testing.T) {
	d := newLoopDisk(t)
	mnt := filepath.Join(d.root, "boot/efi")
	mountTmpfs(t, mnt)
	mustWrite(t, filepath.Join(mnt, "EFI/debian/grubx64.efi"), "old")
	if err := writeESP(event.Emitter{}, d.esp, mnt, true, []byte("new loader")); err != nil {
		t.Fatal(err)
	}
	if got, want := listTree(t, mnt), []string{"EFI", "EFI/BOOT", "EFI/BOOT/BOOTX64.EFI"}; !reflect.DeepEqual(got, want) {
		t.Errorf("mounted ESP holds %q, want %q", got, want)
	}
	if out := sh(t, "mdir", "-i", d.esp, "-/", "-b", "::"); !strings.Contains(out, "grubx64.efi") || strings.Contains(out, "BOOTX64") {
		t.Errorf("the device under the mount was written:\n%s", out)
	}
}

func TestRootSetupKargs(t *testing.T) {
	spec := func(s string) *string { return &s }
	cmdline := kargs.Parse("BOOT_IMAGE=/vmlinuz root=/dev/mapper/vg-root ro rootflags=noatime rd.lvm.lv=vg/root quiet")
	tests := []struct {
		name      string
		fo        FSOptions
		booted    bool
		fsType    string
		superOpts string
		cmdline   []string
		want      []string
		from      string
	}{
		{name: "to-filesystem", fsType: "ext4", want: []string{"root=UUID=u"}, from: "root-filesystem"},
		{name: "btrfs subvolume", fsType: "btrfs", superOpts: "rw,subvolid=256,subvol=/root", want: []string{"root=UUID=u", "rootflags=subvol=/root"}, from: "root-filesystem"},
		{name: "btrfs top level", fsType: "btrfs", superOpts: "rw,subvol=/", want: []string{"root=UUID=u"}, from: "root-filesystem"},
		{name: "spec verbatim, no subvolume", fo: FSOptions{RootMountSpec: spec("LABEL=r")}, fsType: "btrfs", superOpts: "subvol=/root", want: []string{"root=LABEL=r"}, from: "root-mount-spec"},
		{name: "empty spec: no root=", fo: FSOptions{RootMountSpec: spec("")}, fsType: "ext4", want: nil, from: "root-mount-spec"},
		{name: "existing booted root inherits", fo: FSOptions{existingRoot: true}, booted: true, fsType: "xfs", cmdline: cmdline,
			want: []string{"root=/dev/mapper/vg-root", "rootflags=noatime", "rd.lvm.lv=vg/root"}, from: "kernel-cmdline"},
		{name: "existing booted root without root= uses the UUID", fo: FSOptions{existingRoot: true}, booted: true, fsType: "ext4",
			cmdline: kargs.Parse("console=ttyS0 rd.lvm.lv=x"), want: []string{"root=UUID=u"}, from: "root-filesystem"},
		{name: "existing root that is not booted", fo: FSOptions{existingRoot: true}, fsType: "ext4", cmdline: cmdline, want: []string{"root=UUID=u"}, from: "root-filesystem"},
		{name: "to-filesystem onto the booted root never inherits", booted: true, fsType: "ext4", cmdline: cmdline, want: []string{"root=UUID=u"}, from: "root-filesystem"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, from := rootSetupKargs(tt.fo, tt.booted, "u", tt.fsType, tt.superOpts, tt.cmdline)
			if !reflect.DeepEqual(got, tt.want) || from != tt.from {
				t.Errorf("got %q from %s, want %q from %s", got, from, tt.want, tt.from)
			}
		})
	}
}

// TestIsBootedRoot: / is the booted root (pid 1's root, or ours when pid
// 1's is out of reach); a fresh tmpfs is not.
func TestIsBootedRoot(t *testing.T) {
	if b, err := isBootedRoot("/"); err != nil || !b {
		t.Errorf("isBootedRoot(/) = %v, %v", b, err)
	}
	needRoot(t)
	dir := filepath.Join(t.TempDir(), "fs")
	mountTmpfs(t, dir)
	if b, err := isBootedRoot(dir); err != nil || b {
		t.Errorf("isBootedRoot(tmpfs) = %v, %v", b, err)
	}
}
