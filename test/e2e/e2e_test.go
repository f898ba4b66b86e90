package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootlace/bootlace/internal/testbed/qemu"
	"github.com/bootlace/bootlace/internal/testbed/registry"
)

// leftovers lists what an install may have left on the host: mounts of
// bootlace's own scratch directories, loop devices backed by the test's
// disk images, and sandbox processes. Other tests running at the same time
// may mount and attach their own things, so only ours are counted.
func leftovers(t *testing.T) []string {
	t.Helper()
	var out []string
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && strings.Contains(f[4], "/bootlace-") && !strings.Contains(f[4], "/bootlace-e2e-") {
			out = append(out, "mount "+f[4])
		}
	}
	loops, _ := exec.Command("losetup", "-a").Output()
	for _, l := range strings.Split(string(loops), "\n") {
		if strings.Contains(l, "/bootlace-e2e-") && strings.Contains(l, "disk.raw") && !strings.Contains(l, "(deleted)") {
			out = append(out, "loop "+l)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if strings.HasPrefix(string(b), "bootlace-sandbox") {
			out = append(out, "process "+p)
		}
	}
	return out
}

// hostState and checkHostUnchanged bracket an install.
func hostState(t *testing.T) (loops, mounts string) {
	return strings.Join(leftovers(t), "\n"), ""
}

func checkHostUnchanged(t *testing.T, before, _ string) {
	t.Helper()
	if after := strings.Join(leftovers(t), "\n"); after != before {
		t.Errorf("the install left state on the host:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// conflictingHost runs bootlace in a private mount namespace whose /usr/lib
// and /etc carry install configs, kargs.d and prepare-root.conf that
// contradict the image, and whose PATH starts with an ostree and mkfs.*
// that fail if anything calls them. Nothing of it may reach the install.
func conflictingHost(t *testing.T) []string {
	t.Helper()
	d := t.TempDir()
	for _, sub := range []string{"ul-up", "ul-work", "etc-up", "etc-work", "bin"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, tool := range []string{"ostree", "mkfs.ext4", "mkfs.xfs", "mke2fs", "grub-mkimage", "sfdisk", "mkfs.vfat"} {
		script := "#!/bin/sh\necho \"host " + tool + " must not be used\" >&2\nexit 97\n"
		if err := os.WriteFile(filepath.Join(d, "bin", tool), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	setup := `set -e
mount -t overlay overlay -o lowerdir=/usr/lib,upperdir=` + d + `/ul-up,workdir=` + d + `/ul-work /usr/lib
mount -t overlay overlay -o lowerdir=/etc,upperdir=` + d + `/etc-up,workdir=` + d + `/etc-work /etc
mkdir -p /usr/lib/bootc/install /usr/lib/bootc/kargs.d /usr/lib/ostree /etc/bootc/install /etc/ostree
printf '[install]\nroot-fs-type = "btrfs"\nkargs = ["host.leak=install-config"]\nstateroot = "hoststate"\n' > /usr/lib/bootc/install/00-host.toml
printf '[install]\nkargs = ["host.leak=etc-config"]\n' > /etc/bootc/install/99-host.toml
printf 'kargs = ["host.leak=kargsd"]\n' > /usr/lib/bootc/kargs.d/00-host.toml
printf '[composefs]\nenabled = signed\n' > /usr/lib/ostree/prepare-root.conf
printf '[composefs]\nenabled = signed\n' > /etc/ostree/prepare-root.conf
export PATH=` + d + `/bin:$PATH
exec "$@"
`
	return []string{"unshare", "--mount", "--propagation", "private", "sh", "-c", setup, "sh"}
}

func TestToDiskBookwormOCIArchive(t *testing.T) {
	requireRoot(t)
	archive := fixture(t, "bookworm")
	disk := sparseDisk(t, 8<<30)
	loops, mounts := hostState(t)
	out, stderr, code := bootlaceRun(t, conflictingHost(t), "install", "to-disk", "--bound-images", "skip", "--via-loopback",
		"--source-imgref", "oci-archive:"+archive,
		"--target-imgref", "quay.io/bootlace/fixture:bookworm",
		"--karg", "bootlace.cli=1", "--karg-delete", "bootlace.fixture.kargsd",
		"--json", disk)
	if code != 0 {
		t.Fatalf("install failed (exit %d):\n%s", code, tail(stderr, 60))
	}
	checkHostUnchanged(t, loops, mounts)
	rep := parseReport(t, out)
	if rep.Origin != "ostree-unverified-registry:quay.io/bootlace/fixture:bookworm" || rep.Stateroot != "default" {
		t.Errorf("report origin %q stateroot %q", rep.Origin, rep.Stateroot)
	}
	want := []string{"root=UUID=", "rw", "boot=UUID=", "console=ttyS0,115200", "bootlace.fixture=install-config", "bootlace.poweroff", "bootlace.cli=1"}
	absent := []string{"bootlace.fixture.kargsd", "host.leak"}
	for _, fw := range []qemu.Firmware{qemu.UEFI, qemu.BIOS} {
		boot(t, disk, fw, want, absent, rep)
	}
}

func TestToDiskTrixieRegistryXFS(t *testing.T) {
	requireRoot(t)
	archive := fixture(t, "trixie")
	reg := registry.StartForTest(t)
	if _, err := reg.Push(context.Background(), "oci-archive:"+archive, "bootlace/fixture:trixie"); err != nil {
		t.Fatal(err)
	}
	disk := sparseDisk(t, 8<<30)
	loops, mounts := hostState(t)
	out := bootlace(t, "install", "to-disk", "--bound-images", "skip", "--via-loopback", "--filesystem", "xfs",
		"--source-imgref", reg.Ref("bootlace/fixture:trixie"),
		"--cert-dir", reg.CertDir, "--authfile", reg.AuthFile,
		"--stateroot", "trixie", "--json", disk)
	checkHostUnchanged(t, loops, mounts)
	rep := parseReport(t, out)
	if want := "ostree-unverified-registry:" + reg.Addr + "/bootlace/fixture:trixie"; rep.Origin != want {
		t.Errorf("origin %q, want %q", rep.Origin, want)
	}
	want := append([]string{"root=UUID=", "rw", "boot=UUID="}, fixtureKargs...)
	for _, fw := range []qemu.Firmware{qemu.UEFI, qemu.BIOS} {
		boot(t, disk, fw, want, nil, rep)
	}
}

// preparedDisk partitions and formats a disk image with the host's tools,
// as an installer such as Anaconda would, and mounts root and /boot.
type preparedDisk struct {
	path, loop, root string
}

func prepareDisk(t *testing.T) *preparedDisk {
	t.Helper()
	disk := sparseDisk(t, 8<<30)
	layout := `label: gpt
size=1MiB, type=21686148-6449-6E6F-744E-656564454649, name="BIOS-BOOT"
size=256MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI-SYSTEM"
size=768MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="boot"
type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="root"
`
	run(t, layout, "sfdisk", "-q", disk)
	loop := strings.TrimSpace(run(t, "", "losetup", "--show", "-f", disk))
	pd := &preparedDisk{path: disk, loop: loop, root: filepath.Join(filepath.Dir(disk), "mnt")}
	t.Cleanup(func() { pd.release(t) })
	// A loop device another user detached without partx -d may still
	// carry stale partitions: drop whatever the kernel has, then add ours.
	_ = exec.Command("partx", "-d", loop).Run()
	run(t, "", "partx", "-a", loop)
	run(t, "", "mkfs.vfat", "-F", "32", "-s", "1", "-n", "EFI-SYSTEM", loop+"p2")
	run(t, "", "mkfs.ext4", "-q", "-L", "boot", loop+"p3")
	run(t, "", "mkfs.ext4", "-q", "-L", "root", loop+"p4")
	if err := os.MkdirAll(pd.root, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "", "mount", loop+"p4", pd.root)
	if err := os.MkdirAll(pd.root+"/boot", 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "", "mount", loop+"p3", pd.root+"/boot")
	return pd
}

func (pd *preparedDisk) release(t *testing.T) {
	if pd.loop == "" {
		return
	}
	_ = exec.Command("umount", pd.root+"/boot").Run()
	_ = exec.Command("umount", pd.root).Run()
	_ = exec.Command("partx", "-d", pd.loop).Run()
	if out, err := exec.Command("losetup", "-d", pd.loop).CombinedOutput(); err != nil {
		t.Errorf("detaching %s: %v %s", pd.loop, err, out)
	}
	pd.loop = ""
}

func run(t *testing.T, stdin string, argv ...string) string {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, stderr)
	}
	return string(out)
}

func TestToFilesystemBookwormRegistry(t *testing.T) {
	requireRoot(t)
	archive := fixture(t, "bookworm")
	reg := registry.StartForTest(t)
	if _, err := reg.Push(context.Background(), "oci-archive:"+archive, "bootlace/fixture:bookworm"); err != nil {
		t.Fatal(err)
	}
	// The bound images come from the same registry, through a mirror of
	// the names the fixture declares; --creds is for the OS image only.
	srv := serveBoundImages(t, reg)
	pd := prepareDisk(t)
	out := bootlace(t, append([]string{"install", "to-filesystem",
		"--source-imgref", reg.Ref("bootlace/fixture:bookworm"),
		"--creds", reg.User + ":" + reg.Password,
		"--target-imgref", "quay.io/bootlace/fixture:bookworm",
		"--json", pd.root}, srv.pullArgs()...)...)
	rep := parseReport(t, out)
	pd.release(t)
	want := append([]string{"root=UUID=", "rw", "boot=UUID="}, fixtureKargs...)
	boot(t, pd.path, qemu.BIOS, want, nil, rep)
	log := boot(t, pd.path, qemu.UEFI, want, nil, rep)
	// The booted system sees both bound images through bootc's
	// /usr/lib/bootc/storage, with the registry's digests.
	for name, d := range srv.digests {
		if !strings.Contains(log, "BOOTLACE: bound image: "+name+" "+d) {
			t.Errorf("the booted system does not list bound image %s %s:\n%s", name, d, tail(log, 40))
		}
	}
}

func TestToFilesystemTrixieOCIArchive(t *testing.T) {
	requireRoot(t)
	archive := fixture(t, "trixie")
	pd := prepareDisk(t)
	out := bootlace(t, "install", "to-filesystem", "--bound-images", "skip",
		"--source-imgref", "oci-archive:"+archive,
		"--target-imgref", "quay.io/bootlace/fixture:trixie",
		"--karg", "bootlace.cli=to-filesystem", "--json", pd.root)
	rep := parseReport(t, out)
	// --bound-images skip: no store, nothing in the report.
	if _, err := os.Stat(filepath.Join(pd.root, "ostree/bootc/storage")); !os.IsNotExist(err) {
		t.Errorf("--bound-images skip made a bound-image store: %v", err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(out, &top); err != nil {
		t.Fatal(err)
	}
	if b, ok := top["bound-images"]; ok {
		t.Errorf("--bound-images skip: the report lists bound images %s", b)
	}
	pd.release(t)
	want := append(append([]string{"root=UUID=", "rw", "boot=UUID="}, fixtureKargs...), "bootlace.cli=to-filesystem")
	boot(t, pd.path, qemu.UEFI, want, nil, rep)
}
