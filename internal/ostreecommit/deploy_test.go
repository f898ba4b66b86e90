package ostreecommit

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// osTree is a minimal bootable-looking tree as ostree admin deploy wants
// it: a kernel and initramfs under usr/lib/modules, os-release and usr/etc.
func osTree(b builder) {
	b.file("usr/lib/modules/6.1.0-test/vmlinuz", []byte("KERNEL"), 0o644, 0, 0)
	b.file("usr/lib/modules/6.1.0-test/initramfs.img", []byte("INITRD"), 0o644, 0, 0)
	b.file("usr/lib/os-release", []byte("ID=test\nPRETTY_NAME=\"Test OS\"\n"), 0o644, 0, 0)
	b.file("usr/etc/foo.conf", []byte("conf=1\n"), 0o644, 0, 0)
	b.file("usr/etc/shadow", []byte("root:*:1::::::\n"), 0o640, 0, 42)
	b.file("usr/bin/su", pseudo(20, 2000), 0o755|os.ModeSetuid, 0, 0)
	b.xattr("usr/bin/su", "security.capability", capability())
	b.symlink("bin", "usr/bin", 0, 0)
	b.dir("sysroot", 0o755, 0, 0)
	b.dir("var", 0o755, 0, 0)
	b.dir("tmp", 0o777|os.ModeSticky, 0, 0)
}

// The host's ostree admin deploy accepts a commit written by this
// package, and the deployment holds the committed tree.
func TestCommitDeploysWithOstree(t *testing.T) {
	requireOstreeRoot(t)
	if _, err := exec.LookPath("chattr"); err != nil {
		t.Skip("needs chattr to clear the immutable bit ostree sets on deployments before cleanup")
	}
	tmp := t.TempDir()
	sysroot := filepath.Join(tmp, "sysroot")
	repo := newRepo(t, sysroot)
	run(t, "ostree", "admin", "os-init", "--sysroot="+sysroot, "default")
	run(t, "ostree", "config", "--repo="+repo, "set", "sysroot.bootloader", "none")
	stage := build(t, filepath.Join(sysroot, "stage"), osTree)
	csum, err := Commit(context.Background(), repo, stage, baseOptions())
	if err != nil {
		t.Fatal(err)
	}
	run(t, "ostree", "admin", "deploy", "--sysroot="+sysroot, "--os=default", csum)
	dep := filepath.Join(sysroot, "ostree", "deploy", "default", "deploy", csum+".0")
	// ostree seals deployments with the immutable bit; TempDir's cleanup
	// cannot remove it otherwise.
	t.Cleanup(func() { _ = exec.Command("chattr", "-i", dep).Run() })
	if _, err := os.Stat(dep); err != nil {
		t.Fatalf("deployment missing: %v", err)
	}
	orig := build(t, filepath.Join(tmp, "orig"), osTree)
	compareTrees(t, filepath.Join(orig, "usr"), filepath.Join(dep, "usr"))
	if got, err := os.ReadFile(filepath.Join(dep, "etc", "foo.conf")); err != nil || string(got) != "conf=1\n" {
		t.Errorf("deployment /etc/foo.conf = %q, %v", got, err)
	}
	run(t, "ostree", "admin", "status", "--sysroot="+sysroot)
	run(t, "ostree", "fsck", "--repo="+repo)
}
