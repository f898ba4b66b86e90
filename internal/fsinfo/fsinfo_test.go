package fsinfo

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestProbeRealFilesystems(t *testing.T) {
	const uuid = "0b5e2c1a-47f6-4a54-9d8e-1c2b3a4d5e6f"
	tests := []struct {
		name, typ string
		verity    bool
		mkfs      []string
	}{
		{"ext4", "ext4", false, []string{"mkfs.ext4", "-q", "-F", "-U", uuid}},
		{"ext4-verity", "ext4", true, []string{"mkfs.ext4", "-q", "-F", "-O", "verity", "-U", uuid}},
		{"xfs", "xfs", false, []string{"mkfs.xfs", "-q", "-f", "-m", "uuid=" + uuid}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := exec.LookPath(tt.mkfs[0]); err != nil {
				t.Fatalf("%s is needed for this test (install e2fsprogs and xfsprogs)", tt.mkfs[0])
			}
			img := filepath.Join(t.TempDir(), "fs.img")
			if err := os.WriteFile(img, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(img, 320<<20); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(tt.mkfs[0], append(tt.mkfs[1:], img)...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			got, err := Probe(img)
			if err != nil {
				t.Fatal(err)
			}
			if got.Type != tt.typ || got.UUID != uuid || got.Verity != tt.verity {
				t.Fatalf("got %+v, want %s %s", got, tt.typ, uuid)
			}
		})
	}
}

func TestProbeUnknown(t *testing.T) {
	img := filepath.Join(t.TempDir(), "zero.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Probe(img); err == nil {
		t.Fatal("zeroes probed as a filesystem")
	}
}

// TestMountedUUID compares the kernel's answer for a mounted ext4 with the
// superblock's.
func TestMountedUUID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	img := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	want, err := Probe(img)
	if err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	defer exec.Command("umount", "-d", mnt).Run()
	got, err := MountedUUID(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if got != want.UUID {
		t.Errorf("MountedUUID %s, superblock %s", got, want.UUID)
	}
}
