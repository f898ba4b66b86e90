package grub

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// These tests need root (loop devices, mounts) and the host tools the
// reference procedure uses as oracles: sfdisk, partx, mkfs.ext4,
// mkfs.fat, mtools, grub-bios-setup, grub-install, qemu and OVMF.

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop devices and mounts")
	}
}

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if strings.HasPrefix(tool, "/") {
			if _, err := os.Stat(tool); err != nil {
				t.Fatalf("host tool %s is required by this test: %v", tool, err)
			}
		} else if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("host tool %s is required by this test (apt-get install it): %v", tool, err)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	return runEnv(t, nil, name, args...)
}

func runEnv(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(append(os.Environ(), "MTOOLS_SKIP_CHECK=1"), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

const testLayout = `label: gpt
start=2048, size=32MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI-SYSTEM"
size=1MiB, type=21686148-6449-6E6F-744E-656564454649, name="BIOS-BOOT"
type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="boot"
`

// makeDisk creates a 96 MiB GPT disk image: ESP (p1), BIOS boot (p2,
// 1 MiB at LBA 67584) and an ext4 /boot (p3) with the given UUID.
func makeDisk(t *testing.T, path, bootUUID string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 96<<20); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sfdisk", "--quiet", path)
	cmd.Stdin = strings.NewReader(testLayout)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	loop := attach(t, path)
	run(t, "mkfs.fat", "-F", "16", "-n", "EFI-SYSTEM", loop.path+"p1")
	run(t, "mkfs.ext4", "-q", "-F", "-U", bootUUID, "-L", "boot", loop.path+"p3")
	detach(t, loop)
}

// loopDev is an attached loop device; detached records that the test
// released it, so cleanup never detaches a number another test reuses.
type loopDev struct {
	path     string
	detached bool
}

// attach sets up a loop device with partition nodes; the kernel here has
// no GPT scanning, so the partitions are added from userspace.
func attach(t *testing.T, path string) *loopDev {
	t.Helper()
	l := &loopDev{path: strings.TrimSpace(run(t, "losetup", "-f", "--show", path))}
	t.Cleanup(func() {
		if !l.detached {
			_ = exec.Command("partx", "-d", l.path).Run()
			_ = exec.Command("losetup", "-d", l.path).Run()
		}
	})
	run(t, "partx", "-a", l.path)
	for i := 0; i < 50; i++ {
		if _, err := os.Stat(l.path + "p3"); err == nil {
			return l
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%sp3 did not appear", l.path)
	return nil
}

// detach removes the partitions first: a loop device attached without
// partition scanning keeps userspace-added partitions after detaching.
func detach(t *testing.T, l *loopDev) {
	t.Helper()
	run(t, "partx", "-d", l.path)
	run(t, "losetup", "-d", l.path)
	l.detached = true
}

func mount(t *testing.T, dev string) string {
	t.Helper()
	dir := t.TempDir()
	run(t, "mount", dev, dir)
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
	return dir
}

func readRange(t *testing.T, path string, lba, sectors uint64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, sectors*512)
	if _, err := f.ReadAt(b, int64(lba*512)); err != nil {
		t.Fatal(err)
	}
	return b
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	run(t, "cp", "--sparse=always", src, dst)
}

// TestInstallBIOSMatchesGrubTools embeds the same core.img with
// InstallBIOS on one copy of a disk and with the real GRUB tools on
// another, and compares sector 0 and the whole BIOS boot partition
// (reference §3.2, §3.3).
func TestInstallBIOSMatchesGrubTools(t *testing.T) {
	requireRoot(t)
	setup := "/usr/lib/grub/i386-pc/grub-bios-setup"
	requireTools(t, "sfdisk", "partx", "losetup", "mkfs.ext4", "mkfs.fat", "grub-mkimage", "grub-install", setup, bootImg)
	const uuid = "0e6f1f3a-5a0e-4c59-9b1e-7b3c0f6a2d41"
	dir := t.TempDir()
	base := filepath.Join(dir, "base.img")
	makeDisk(t, base, uuid)

	bi, err := BuildBIOSCore(context.Background(), &hostRunner{},
		ImageOptions{Root: "/", BootUUID: uuid, BootIsSeparate: true, BootFSType: "ext4", TempDir: dir})
	if err != nil {
		t.Fatal(err)
	}

	oracles := []struct {
		name string
		// install runs the real tool on the attached loop device with /boot
		// mounted at m, and returns the core.img it embedded.
		install func(t *testing.T, loop, m string) []byte
	}{
		{"grub-bios-setup", func(t *testing.T, loop, m string) []byte {
			d := filepath.Join(m, "setup")
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			for name, b := range map[string][]byte{"boot.img": bi.Boot, "core.img": bi.Core} {
				if err := os.WriteFile(filepath.Join(d, name), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			runEnv(t, udevadmShim(t), setup, "--no-rs-codes", "-d", d, loop)
			return bi.Core
		}},
		{"grub-install", func(t *testing.T, loop, m string) []byte {
			out := runEnv(t, udevadmShim(t), "grub-install", "--target=i386-pc", "--no-rs-codes", "--boot-directory="+m, "-v", loop)
			if !strings.Contains(out, "grub-mkimage") {
				t.Logf("grub-install -v printed no grub-mkimage line")
			}
			core, err := os.ReadFile(filepath.Join(m, "grub/i386-pc/core.img"))
			if err != nil {
				t.Fatal(err)
			}
			return core
		}},
	}
	for _, o := range oracles {
		t.Run(o.name, func(t *testing.T) {
			a, b := filepath.Join(dir, o.name+"-a.img"), filepath.Join(dir, o.name+"-b.img")
			copyFile(t, base, a)
			copyFile(t, base, b)

			loopA := attach(t, a)
			m := mount(t, loopA.path+"p3")
			core := o.install(t, loopA.path, m)
			run(t, "umount", m)
			detach(t, loopA)

			loopB := attach(t, b)
			start, sectors, err := FindBIOSBoot(loopB.path)
			if err != nil {
				t.Fatal(err)
			}
			if start != 67584 || sectors != 2048 {
				t.Fatalf("BIOS boot partition at %d+%d, want 67584+2048", start, sectors)
			}
			if err := InstallBIOS(loopB.path, bi.Boot, core, start, sectors); err != nil {
				t.Fatal(err)
			}
			detach(t, loopB)

			if sa, sb := readRange(t, a, 0, 1), readRange(t, b, 0, 1); !bytes.Equal(sa, sb) {
				t.Errorf("sector 0 differs from %s at %v", o.name, diffOffsets(sa, sb))
			}
			pa, pb := readRange(t, a, start, sectors), readRange(t, b, start, sectors)
			if !bytes.Equal(pa, pb) {
				t.Errorf("BIOS boot partition differs from %s at %v", o.name, diffOffsets(pa, pb))
			}
			if bytes.Equal(readRange(t, b, 0, 1), readRange(t, base, 0, 1)) {
				t.Error("sector 0 unchanged")
			}
			t.Logf("%s: sector 0 and %d sectors of BIOS boot identical (core.img %d bytes)", o.name, sectors, len(core))
		})
	}
}

// udevadmShim returns a PATH whose udevadm answers "info --query path
// --name DEV" from sysfs, as udevadm itself does. GRUB's tools call it to
// find a partition's start; this host has no udev, and the loop partition
// nodes answer no HDIO_GETGEO, GRUB's fallback.
func udevadmShim(t *testing.T) []string {
	t.Helper()
	if _, err := exec.LookPath("udevadm"); err == nil {
		return nil
	}
	dir := t.TempDir()
	script := `#!/bin/sh
for last; do :; done
p=$(readlink -f "/sys/class/block/$(basename "$last")") || exit 1
echo "${p#/sys}"
`
	if err := os.WriteFile(filepath.Join(dir, "udevadm"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return []string{"PATH=" + dir + ":" + os.Getenv("PATH")}
}

func diffOffsets(a, b []byte) []string {
	var d []string
	for i := range a {
		if a[i] != b[i] {
			d = append(d, fmt.Sprintf("%#x", i))
			if len(d) == 8 {
				break
			}
		}
	}
	return d
}

// TestBootQEMU installs both images on a disk whose grub.cfg is Config's
// output plus a marker line and halt, and boots it under SeaBIOS and OVMF
// (reference §3.1).
func TestBootQEMU(t *testing.T) {
	requireRoot(t)
	ovmfCode, ovmfVars := "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"
	requireTools(t, "sfdisk", "partx", "losetup", "mkfs.ext4", "mkfs.fat", "mmd", "mcopy",
		"grub-mkimage", "qemu-system-x86_64", ovmfCode, ovmfVars, bootImg)
	const uuid = "5d3c2b1a-0f9e-4d8c-a7b6-c5d4e3f2a1b0"
	entries := []Entry{
		{ID: "ostree-2-default", Title: "Test OS 'new' (ostree:0)", Version: "2",
			Linux: "/boot/ostree/test-abc/vmlinuz", Initrd: []string{"/boot/ostree/test-abc/initramfs.img"},
			Options: "root=UUID=x rw console=ttyS0,115200"},
		{ID: "ostree-1-default", Title: "Test OS old (ostree:1)", Version: "1",
			Linux: "/ostree/test-old/vmlinuz", Options: "rw"},
	}
	for _, separate := range []bool{true, false} {
		t.Run(fmt.Sprintf("separate-boot=%v", separate), func(t *testing.T) {
			dir := t.TempDir()
			disk := filepath.Join(dir, "disk.img")
			makeDisk(t, disk, uuid)
			ctx := context.Background()
			opts := ImageOptions{Root: "/", BootUUID: uuid, BootIsSeparate: separate, BootFSType: "ext4", TempDir: dir}
			efi, err := BuildEFI(ctx, &hostRunner{}, opts)
			if err != nil {
				t.Fatal(err)
			}
			bi, err := BuildBIOSCore(ctx, &hostRunner{}, opts)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := Config(entries, ConfigOptions{BootUUID: uuid, BootIsSeparate: separate})
			if err != nil {
				t.Fatal(err)
			}
			// Appended after the menu entries: GRUB runs every top-level
			// command of grub.cfg (defining the menu) before this line.
			cfg = append(cfg, "echo \"MARKER-GRUB-OK platform=${grub_platform} root=${root} prefix=${prefix} timeout=${timeout}\"\nhalt\n"...)

			loop := attach(t, disk)
			m := mount(t, loop.path+"p3")
			grubDir := filepath.Join(m, "grub")
			if !separate {
				grubDir = filepath.Join(m, "boot", "grub")
			}
			if err := os.MkdirAll(grubDir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(grubDir, "grub.cfg"), cfg, 0o644); err != nil {
				t.Fatal(err)
			}
			run(t, "umount", m)
			efiFile := filepath.Join(dir, "BOOTX64.EFI")
			if err := os.WriteFile(efiFile, efi, 0o644); err != nil {
				t.Fatal(err)
			}
			run(t, "mmd", "-i", loop.path+"p1", "::/EFI", "::/EFI/BOOT")
			run(t, "mcopy", "-i", loop.path+"p1", efiFile, "::/EFI/BOOT/BOOTX64.EFI")
			start, sectors, err := FindBIOSBoot(loop.path)
			if err != nil {
				t.Fatal(err)
			}
			if err := InstallBIOS(loop.path, bi.Boot, bi.Core, start, sectors); err != nil {
				t.Fatal(err)
			}
			detach(t, loop)

			prefix := "(hd0,gpt3)/grub"
			if !separate {
				prefix = "(hd0,gpt3)/boot/grub"
			}
			for _, fw := range []string{"pc", "efi"} {
				t.Run(fw, func(t *testing.T) {
					args := []string{"-m", "512", "-display", "none", "-monitor", "none", "-nic", "none",
						"-no-reboot", "-snapshot", "-serial", "file:" + filepath.Join(dir, fw+".log"),
						"-drive", "file=" + disk + ",format=raw,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0"}
					if fw == "efi" {
						vars := filepath.Join(dir, "vars.fd")
						copyFile(t, ovmfVars, vars)
						args = append(args, "-machine", "q35,accel=tcg", "-cpu", "max",
							"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+ovmfCode,
							"-drive", "if=pflash,format=raw,unit=1,file="+vars)
					} else {
						args = append(args, "-machine", "pc,accel=tcg")
					}
					log, elapsed := bootQEMU(t, filepath.Join(dir, fw+".log"), args, 120*time.Second, true)
					want := fmt.Sprintf("MARKER-GRUB-OK platform=%s root=hd0,gpt3 prefix=%s timeout=1", fw, prefix)
					if !strings.Contains(log, want) {
						t.Errorf("serial log lacks %q:\n%s", want, log)
					}
					for _, bad := range []string{"error:", "grub rescue>"} {
						if strings.Contains(log, bad) {
							t.Errorf("serial log contains %q:\n%s", bad, log)
						}
					}
					t.Logf("%s: marker after %v", fw, elapsed.Round(100*time.Millisecond))
				})
			}
		})
	}

	// Negative control: a core image searching for another UUID must not
	// reach grub.cfg, which shows the marker comes from the UUID search.
	t.Run("wrong-uuid", func(t *testing.T) {
		dir := t.TempDir()
		disk := filepath.Join(dir, "disk.img")
		makeDisk(t, disk, uuid)
		const other = "99999999-8888-7777-6666-555555555555"
		bi, err := BuildBIOSCore(context.Background(), &hostRunner{},
			ImageOptions{Root: "/", BootUUID: other, BootIsSeparate: true, BootFSType: "ext4", TempDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		loop := attach(t, disk)
		m := mount(t, loop.path+"p3")
		if err := os.MkdirAll(filepath.Join(m, "grub"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(m, "grub", "grub.cfg"), []byte("echo MARKER-GRUB-OK\nhalt\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		run(t, "umount", m)
		start, sectors, err := FindBIOSBoot(loop.path)
		if err != nil {
			t.Fatal(err)
		}
		if err := InstallBIOS(loop.path, bi.Boot, bi.Core, start, sectors); err != nil {
			t.Fatal(err)
		}
		detach(t, loop)
		logPath := filepath.Join(dir, "pc.log")
		log, _ := bootQEMU(t, logPath, []string{"-machine", "pc,accel=tcg", "-m", "512", "-display", "none",
			"-monitor", "none", "-nic", "none", "-no-reboot", "-snapshot", "-serial", "file:" + logPath,
			"-drive", "file=" + disk + ",format=raw,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0"},
			15*time.Second, false)
		if strings.Contains(log, "MARKER-GRUB-OK") {
			t.Errorf("marker reached with a wrong UUID:\n%s", log)
		}
		if !strings.Contains(log, "no such device: "+other) {
			t.Errorf("serial log lacks the failed search:\n%s", log)
		}
	})
}

var ansiRE = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

// bootQEMU runs QEMU until it powers off (GRUB's halt) or the timeout
// passes; the context kills it on timeout, so no process outlives the
// test. wantExit says whether QEMU must have powered off by itself.
func bootQEMU(t *testing.T, logPath string, args []string, timeout time.Duration, wantExit bool) (string, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	cmd.WaitDelay = 5 * time.Second
	begin := time.Now()
	out, err := cmd.CombinedOutput()
	elapsed := time.Since(begin)
	raw, rerr := os.ReadFile(logPath)
	if rerr != nil {
		t.Fatalf("qemu wrote no serial log: %v (qemu: %v, %s)", rerr, err, out)
	}
	log := ansiRE.ReplaceAllString(strings.ReplaceAll(string(raw), "\r", ""), "")
	if wantExit && err != nil {
		t.Fatalf("qemu did not power off by itself after %v: %v %s\nserial log:\n%s", elapsed, err, out, log)
	}
	return log, elapsed
}
