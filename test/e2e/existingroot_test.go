package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/bootlace/bootlace/internal/testbed/qemu"
)

// oldSystem is a disk as a user of a plain Debian machine has it: GPT with an
// ESP and a root filesystem holding the system, its kernel and GRUB
// configuration in /boot, and the distribution's boot loader on the ESP.
type oldSystem struct {
	path, loop, root, esp string
	marker                string // content of /etc/old-system-marker
	oldLoader             []byte
}

func makeOldSystem(t *testing.T) *oldSystem {
	t.Helper()
	disk := sparseDisk(t, 6<<30)
	run(t, "label: gpt\nsize=256MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"EFI System\"\ntype=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=\"root\"\n", "sfdisk", "-q", disk)
	o := &oldSystem{path: disk, loop: strings.TrimSpace(run(t, "", "losetup", "--show", "-f", disk))}
	o.root = filepath.Join(filepath.Dir(disk), "mnt")
	t.Cleanup(func() { o.release(t) })
	if _, err := os.Stat(o.loop + "p1"); err != nil {
		run(t, "", "partx", "-a", o.loop)
	}
	o.esp = o.loop + "p1"
	run(t, "", "mkfs.vfat", "-F", "32", "-n", "ESP", o.esp)
	run(t, "", "mkfs.ext4", "-q", "-L", "debian-root", o.loop+"p2")
	if err := os.MkdirAll(o.root, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "", "mount", o.loop+"p2", o.root)

	// The system: the debootstrap tree the fixture build caches (a plain
	// Debian minbase), else a small hand-made tree.
	tarballs, _ := filepath.Glob("/var/cache/bootlace-test/debootstrap/bookworm-*.tar.zst")
	if len(tarballs) > 0 {
		slices.Sort(tarballs)
		run(t, "", "tar", "-I", "zstd", "-xpf", tarballs[len(tarballs)-1], "--numeric-owner", "-C", o.root)
		t.Logf("old system: %s", tarballs[len(tarballs)-1])
	} else {
		for _, d := range []string{"usr/bin", "usr/lib", "var/lib", "home", "root", "etc"} {
			if err := os.MkdirAll(filepath.Join(o.root, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		writeFile(t, filepath.Join(o.root, "etc/os-release"), "ID=debian\nVERSION_CODENAME=bookworm\n")
		t.Log("old system: no debootstrap tarball cached, using a small hand-made tree")
	}
	o.marker = "old-system-" + randomHex(t)
	writeFile(t, filepath.Join(o.root, "etc/old-system-marker"), o.marker+"\n")
	writeFile(t, filepath.Join(o.root, "boot/vmlinuz-6.1.0-old-amd64"), "stale kernel")
	writeFile(t, filepath.Join(o.root, "boot/initrd.img-6.1.0-old-amd64"), "stale initramfs")
	writeFile(t, filepath.Join(o.root, "boot/grub/grub.cfg"), "menuentry 'Old Debian' { linux /boot/vmlinuz-6.1.0-old-amd64 }\n")
	o.oldLoader = []byte("old boot loader " + randomHex(t))
	loader := filepath.Join(filepath.Dir(disk), "grubx64.efi")
	writeFile(t, loader, string(o.oldLoader))
	run(t, "", "mmd", "-i", o.esp, "::EFI", "::EFI/debian", "::EFI/BOOT")
	run(t, "", "mcopy", "-i", o.esp, loader, "::EFI/debian/grubx64.efi")
	run(t, "", "mcopy", "-i", o.esp, loader, "::EFI/BOOT/BOOTX64.EFI")
	return o
}

func (o *oldSystem) release(t *testing.T) {
	if o.loop == "" {
		return
	}
	_ = exec.Command("umount", "-R", o.root).Run()
	_ = exec.Command("partx", "-d", o.loop).Run()
	if out, err := exec.Command("losetup", "-d", o.loop).CombinedOutput(); err != nil {
		t.Errorf("detaching %s: %v %s", o.loop, err, out)
	}
	o.loop = ""
}

func writeFile(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestToExistingRootBookworm installs next to a plain Debian system on its
// own disk, then boots the disk: the new deployment boots, and the old root
// is there under /sysroot. The root is not the booted root, so there is no
// wait and root= comes from the filesystem.
func TestToExistingRootBookworm(t *testing.T) {
	requireRoot(t)
	archive := fixture(t, "bookworm")
	o := makeOldSystem(t)
	uuid := strings.TrimSpace(run(t, "", "blkid", "-s", "UUID", "-o", "value", o.loop+"p2"))
	loops, mounts := hostState(t)
	out, stderr, code := bootlaceRun(t, nil, "install", "to-existing-root", "--bound-images", "skip",
		"--source-imgref", "oci-archive:"+archive,
		"--target-imgref", "quay.io/bootlace/fixture:bookworm",
		"--cleanup", "--json", o.root)
	if code != 0 {
		t.Fatalf("to-existing-root failed (exit %d):\n%s", code, tail(stderr, 60))
	}
	checkHostUnchanged(t, loops, mounts)
	if strings.Contains(stderr, "booted host root") {
		t.Errorf("a target that is not the booted root got the booted-root warning:\n%s", stderr)
	}
	rep := parseReport(t, out)
	var raw struct {
		Warnings []string `json:"warnings"`
		Plan     struct {
			Verb   string `json:"verb"`
			Target struct {
				Replace       string `json:"replace"`
				RootKargsFrom string `json:"root-kargs-from"`
				BootedRoot    bool   `json:"booted-root"`
				Cleanup       bool   `json:"cleanup"`
			} `json:"target"`
		} `json:"plan"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		t.Fatal(err)
	}
	if p := raw.Plan; p.Verb != "to-existing-root" || p.Target.Replace != "alongside" || p.Target.RootKargsFrom != "root-filesystem" || p.Target.BootedRoot || !p.Target.Cleanup {
		t.Errorf("plan %+v", p)
	}
	if !slices.Contains(rep.Kargs, "root=UUID="+uuid) {
		t.Errorf("kargs %q lack root=UUID=%s", rep.Kargs, uuid)
	}
	if _, ok := rep.Phases["finalize"]; ok {
		t.Error("to-existing-root finalized the filesystems")
	}
	// The fixture has no bootc, so --cleanup can only leave bootc's stamp,
	// and says that nothing will act on it.
	if !exists(filepath.Join(o.root, "etc/bootc-destructive-cleanup")) {
		t.Error("--cleanup left no etc/bootc-destructive-cleanup")
	}
	if !slices.ContainsFunc(raw.Warnings, func(w string) bool { return strings.Contains(w, "bootc-destructive-cleanup.service") }) {
		t.Errorf("no warning about the missing cleanup service: %q", raw.Warnings)
	}

	// Offline: the old root is intact, its boot files and boot loader are gone.
	if data, err := os.ReadFile(filepath.Join(o.root, "etc/old-system-marker")); err != nil || strings.TrimSpace(string(data)) != o.marker {
		t.Errorf("old system marker: %q %v", data, err)
	}
	for _, p := range []string{"boot/vmlinuz-6.1.0-old-amd64", "boot/initrd.img-6.1.0-old-amd64"} {
		if exists(filepath.Join(o.root, p)) {
			t.Errorf("%s survived", p)
		}
	}
	if cfg, err := os.ReadFile(filepath.Join(o.root, "boot/grub/grub.cfg")); err != nil || strings.Contains(string(cfg), "Old Debian") {
		t.Errorf("grub.cfg is not the new one (%v):\n%s", err, cfg)
	}
	if !exists(filepath.Join(o.root, rep.Deployment)) {
		t.Errorf("deployment %s missing", rep.Deployment)
	}
	if esp := run(t, "", "mdir", "-i", o.esp, "-/", "-b", "::"); strings.Contains(esp, "debian") {
		t.Errorf("the old boot loader is still on the ESP:\n%s", esp)
	}
	if efi := run(t, "", "mtype", "-i", o.esp, "::EFI/BOOT/BOOTX64.EFI"); efi == string(o.oldLoader) {
		t.Error("EFI/BOOT/BOOTX64.EFI is still the old boot loader")
	}
	o.release(t)

	boot(t, o.path, qemu.UEFI, append([]string{"root=UUID=" + uuid, "rw"}, fixtureKargs...), []string{"boot"}, rep)
	log, err := os.ReadFile(filepath.Join(filepath.Dir(o.path), "console-uefi.log"))
	if err != nil {
		t.Fatal(err)
	}
	if got := consoleValue(string(log), "BOOTLACE: old-system-marker: "); got != o.marker {
		t.Errorf("old system marker under /sysroot on the guest: %q, want %q", got, o.marker)
	}
	t.Logf("guest: sysroot: %s; old-system-marker: %s", consoleValue(string(log), "BOOTLACE: sysroot: "), consoleValue(string(log), "BOOTLACE: old-system-marker: "))
	sysroot := strings.Fields(consoleValue(string(log), "BOOTLACE: sysroot: "))
	for _, want := range []string{"ostree", "etc", "usr", "boot"} {
		if !slices.Contains(sysroot, want) {
			t.Errorf("/sysroot on the guest lacks %s: %q", want, sysroot)
		}
	}
}

// TestToFilesystemReplaceWipe installs onto filesystems that hold an old
// system (root and a separate /boot): without --replace the target is
// refused untouched; with --replace wipe the old contents go, lost+found
// stays, and the install is finalized as usual.
func TestToFilesystemReplaceWipe(t *testing.T) {
	requireRoot(t)
	archive := fixture(t, "trixie")
	pd := prepareDisk(t)
	writeFile(t, filepath.Join(pd.root, "etc/old-system-marker"), "old\n")
	writeFile(t, filepath.Join(pd.root, "usr/bin/old-tool"), "#!/bin/sh\n")
	writeFile(t, filepath.Join(pd.root, "boot/vmlinuz-6.1.0-old-amd64"), "stale kernel")
	writeFile(t, filepath.Join(pd.root, "boot/loader/entries/old.conf"), "title old\n")
	args := []string{"install", "to-filesystem", "--source-imgref", "oci-archive:" + archive, "--json", "--bound-images", "skip"}
	if _, stderr, code := bootlaceRun(t, nil, append(args, pd.root)...); code != 4 || !strings.Contains(stderr, "not empty") {
		t.Fatalf("a non-empty target without --replace: exit %d\n%s", code, tail(stderr, 10))
	}
	if !exists(filepath.Join(pd.root, "etc/old-system-marker")) {
		t.Fatal("the refused install changed the target")
	}
	out := bootlace(t, append(args, "--replace", "wipe", pd.root)...)
	rep := parseReport(t, out)
	if _, ok := rep.Phases["finalize"]; !ok {
		t.Error("--replace wipe did not finalize")
	}
	for _, p := range []string{"etc", "usr", "boot/vmlinuz-6.1.0-old-amd64", "boot/loader/entries/old.conf"} {
		if exists(filepath.Join(pd.root, p)) {
			t.Errorf("%s survived the wipe", p)
		}
	}
	for _, p := range []string{"lost+found", "boot/lost+found", rep.Deployment, ".bootc-aleph.json"} {
		if !exists(filepath.Join(pd.root, p)) {
			t.Errorf("%s is missing after the install", p)
		}
	}
	entries, _ := filepath.Glob(filepath.Join(pd.root, "boot/loader/entries/*.conf"))
	if len(entries) != 1 || !strings.HasPrefix(filepath.Base(entries[0]), "ostree-") {
		t.Errorf("boot entries %q, want the new deployment's only", entries)
	}

	// Wiping a finished install: ostree made its deployment immutable, and
	// finalize left the filesystems read-only (remounted here, as a user
	// would). The re-run replaces it rather than taking it as done.
	run(t, "", "mount", "-o", "remount,rw", pd.root)
	run(t, "", "mount", "-o", "remount,rw", pd.root+"/boot")
	rep2 := parseReport(t, bootlace(t, append(args, "--replace", "wipe", "--stateroot", "second", pd.root)...))
	deps, _ := filepath.Glob(filepath.Join(pd.root, "ostree/deploy/*/deploy/*.0"))
	if len(deps) != 1 || !strings.HasSuffix(deps[0], rep2.Deployment) || rep2.Stateroot != "second" {
		t.Errorf("deployments after the second wipe %q, want only %s", deps, rep2.Deployment)
	}
	pd.release(t)
}

// TestDryRunToExistingRoot plans an install next to this very machine:
// bootlace mounts the host's root at /target itself (privately), sees it
// is the booted root and takes root= from the running kernel when it has
// one. A dry run writes nothing and does not wait; /target is removed again.
func TestDryRunToExistingRoot(t *testing.T) {
	requireRoot(t)
	if exists("/target") {
		t.Fatal("/target exists on this host; the test needs it absent to check that bootlace creates and removes it")
	}
	archive := fixture(t, "bookworm")
	loops, mounts := hostState(t)
	out := bootlace(t, "install", "to-existing-root", "--dry-run", "--source-imgref", "oci-archive:"+archive)
	checkHostUnchanged(t, loops, mounts)
	if exists("/target") {
		t.Error("the dry run left /target behind")
	}
	var p struct {
		Verb   string   `json:"verb"`
		Kargs  []string `json:"kargs"`
		Target struct {
			Root          string `json:"root"`
			Replace       string `json:"replace"`
			RootKargsFrom string `json:"root-kargs-from"`
			RootMountSpec string `json:"root-mount-spec"`
			BootedRoot    bool   `json:"booted-root"`
		} `json:"target"`
	}
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("plan: %v\n%s", err, out)
	}
	if p.Verb != "to-existing-root" || p.Target.Root != "/target" || p.Target.Replace != "alongside" || !p.Target.BootedRoot {
		t.Errorf("plan target %+v", p.Target)
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	want := "root-filesystem"
	for _, a := range strings.Fields(string(cmdline)) {
		if v, ok := strings.CutPrefix(a, "root="); ok {
			want = "kernel-cmdline"
			if p.Target.RootMountSpec != v {
				t.Errorf("root mount spec %q, want %q from the kernel command line", p.Target.RootMountSpec, v)
			}
			break
		}
	}
	if p.Target.RootKargsFrom != want {
		t.Errorf("root kargs from %q, want %q (cmdline %q)", p.Target.RootKargsFrom, want, cmdline)
	}
	if want == "root-filesystem" {
		// findmnt knows the UUID only when it can read the device (udev
		// or blkid); otherwise check the form.
		uuid := strings.TrimSpace(run(t, "", "findmnt", "-n", "-o", "UUID", "/"))
		if uuid != "" && p.Target.RootMountSpec != "UUID="+uuid {
			t.Errorf("root mount spec %q, want UUID=%s of the host's root", p.Target.RootMountSpec, uuid)
		}
		if !regexp.MustCompile(`^UUID=[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`).MatchString(p.Target.RootMountSpec) {
			t.Errorf("root mount spec %q is not the host root's UUID", p.Target.RootMountSpec)
		}
	}
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
