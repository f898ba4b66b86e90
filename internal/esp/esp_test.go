package esp

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func sparseFile(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "esp.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is needed to verify the ESP: apt-get install %s", name, pkg)
	}
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFormatAndWrite(t *testing.T) {
	needTool(t, "fsck.vfat", "dosfstools")
	needTool(t, "mtype", "mtools")
	for _, tc := range []struct {
		name   string
		size   int64
		fatTyp string
	}{
		{"512MiB", 512 << 20, "FAT32"},
		{"40MiB", 40 << 20, "FAT32"},
		{"16MiB", 16 << 20, "FAT16"},
		// Sizes where go-diskfs makes the FAT a few entries short.
		{"64MiB", 64 << 20, "FAT32"},
		{"505MiB", 505 << 20, "FAT32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := sparseFile(t, tc.size)
			id, err := Format(img, 0, DefaultLabel)
			if err != nil {
				t.Fatal(err)
			}
			if !regexp.MustCompile(`^[0-9A-F]{4}-[0-9A-F]{4}$`).MatchString(id) {
				t.Fatalf("volume ID %q is not XXXX-XXXX", id)
			}
			efi := randomBytes(t, 1<<20)
			cfg := []byte("search --no-floppy --fs-uuid --set=root abcd\nconfigfile /grub2/grub.cfg\n")
			files := []File{
				{Path: "EFI/BOOT/BOOTX64.EFI", Data: efi},
				{Path: "EFI/BOOT/grub.cfg", Data: cfg},
				{Path: "/EFI/debian/a-long-file-name.conf", Data: []byte("x")},
				{Path: "startup.nsh", Data: []byte("fs0:\\EFI\\BOOT\\BOOTX64.EFI\r\n")},
			}
			if err := WriteFiles(img, files); err != nil {
				t.Fatal(err)
			}

			out := run(t, "fsck.vfat", "-n", "-v", img)
			if bits := map[string]string{"FAT32": "32 bit entries", "FAT16": "16 bit entries"}[tc.fatTyp]; !strings.Contains(out, bits) {
				t.Errorf("fsck.vfat does not report %s:\n%s", tc.fatTyp, out)
			}
			if got := run(t, "mlabel", "-i", img, "-s", "::"); !strings.Contains(got, "EFI-SYSTEM") {
				t.Errorf("label: %q", got)
			}
			// mdir prints the serial as XXXX-XXXX.
			if got := run(t, "mdir", "-i", img, "::"); !strings.Contains(got, id) {
				t.Errorf("mdir does not show serial %s:\n%s", id, got)
			}
			for _, f := range files {
				got := []byte(run(t, "mtype", "-i", img, "::"+f.Path))
				if !bytes.Equal(got, f.Data) {
					t.Errorf("mtype %s: %d bytes differ from the %d written", f.Path, len(got), len(f.Data))
				}
				rt, err := ReadFile(img, f.Path)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(rt, f.Data) {
					t.Errorf("ReadFile %s: content differs", f.Path)
				}
			}

			// Overwrite with a shorter and a longer version; the volume must stay clean.
			short := []byte("configfile /new.cfg\n")
			long := randomBytes(t, 3<<20)
			if err := WriteFiles(img, []File{{"EFI/BOOT/grub.cfg", short}, {"EFI/BOOT/BOOTX64.EFI", long}}); err != nil {
				t.Fatal(err)
			}
			run(t, "fsck.vfat", "-n", img)
			if got := []byte(run(t, "mtype", "-i", img, "::EFI/BOOT/grub.cfg")); !bytes.Equal(got, short) {
				t.Errorf("overwritten grub.cfg = %q", got)
			}
			if got, _ := ReadFile(img, "EFI/BOOT/BOOTX64.EFI"); !bytes.Equal(got, long) {
				t.Errorf("overwritten BOOTX64.EFI differs")
			}
			if got := run(t, "mdir", "-i", img, "-b", "::EFI/BOOT"); strings.Count(got, "grub.cfg") != 1 {
				t.Errorf("EFI/BOOT after overwrite:\n%s", got)
			}
		})
	}
}

func TestFormatAtRegion(t *testing.T) {
	needTool(t, "fsck.vfat", "dosfstools")
	img := sparseFile(t, 64<<20)
	off := uint64(8 << 20)
	if _, err := FormatAt(img, off, 40<<20, "ESP"); err != nil {
		t.Fatal(err)
	}
	if err := WriteFilesAt(img, off, []File{{"a/b.txt", []byte("hello")}}); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFileAt(img, off, "a/b.txt")
	if err != nil || string(got) != "hello" {
		t.Fatalf("ReadFileAt = %q, %v", got, err)
	}
	run(t, "mtype", "-i", img+"@@"+"8M", "::a/b.txt")
}

func TestFormatRejects(t *testing.T) {
	img := sparseFile(t, 64<<20)
	for _, tc := range []struct {
		name  string
		off   uint64
		size  uint64
		label string
	}{
		{"too small", 0, 1 << 20, "ESP"},
		{"beyond end", 32 << 20, 40 << 20, "ESP"},
		{"unaligned", 100, 40 << 20, "ESP"},
		{"long label", 0, 0, "THIS-IS-TOO-LONG"},
		{"bad label", 0, 0, "A/B"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := FormatAt(img, tc.off, tc.size, tc.label); err == nil {
				t.Fatal("no error")
			}
		})
	}
	if _, err := ReadFile(img, "x"); err == nil {
		t.Error("ReadFile on an unformatted image succeeded")
	}
}

func TestCleanPath(t *testing.T) {
	for in, want := range map[string]string{
		"EFI/BOOT/BOOTX64.EFI": "/EFI/BOOT/BOOTX64.EFI",
		"/a//b/../c":           "/a/c",
		"../../x":              "/x",
		"":                     "",
		"a\\b":                 "",
	} {
		got, err := cleanPath(in)
		if want == "" {
			if err == nil {
				t.Errorf("cleanPath(%q) = %q, want error", in, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("cleanPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestClear empties ESPs made by the host's mkfs.fat and filled by mtools,
// as an existing system has them, and checks the volume keeps its identity.
func TestClear(t *testing.T) {
	needTool(t, "mkfs.vfat", "dosfstools")
	needTool(t, "mcopy", "mtools")
	for _, tc := range []struct {
		name string
		size int64
		fat  string
	}{
		{"FAT32 256MiB", 256 << 20, "32"},
		{"FAT16 64MiB", 64 << 20, "16"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := sparseFile(t, tc.size)
			run(t, "mkfs.vfat", "-F", tc.fat, "-i", "1234ABCD", "-n", "OLDESP", img)
			src := filepath.Join(t.TempDir(), "grubx64.efi")
			if err := os.WriteFile(src, randomBytes(t, 300<<10), 0o644); err != nil {
				t.Fatal(err)
			}
			run(t, "mmd", "-i", img, "::EFI", "::EFI/debian", "::EFI/BOOT")
			run(t, "mcopy", "-i", img, src, "::EFI/debian/grubx64.efi")
			run(t, "mcopy", "-i", img, src, "::EFI/BOOT/BOOTX64.EFI")

			if err := Clear(img); err != nil {
				t.Fatal(err)
			}
			run(t, "fsck.vfat", "-n", img)
			if got := run(t, "mlabel", "-i", img, "-s", "::"); !strings.Contains(got, "OLDESP") {
				t.Errorf("label after Clear: %q", got)
			}
			dir := run(t, "mdir", "-i", img, "::")
			if !strings.Contains(dir, "1234-ABCD") {
				t.Errorf("volume serial changed:\n%s", dir)
			}
			if strings.Contains(dir, "EFI") {
				t.Errorf("the ESP still holds files after Clear:\n%s", dir)
			}
			efi := randomBytes(t, 1<<20)
			if err := WriteFiles(img, []File{{Path: "EFI/BOOT/BOOTX64.EFI", Data: efi}}); err != nil {
				t.Fatal(err)
			}
			if got := []byte(run(t, "mtype", "-i", img, "::EFI/BOOT/BOOTX64.EFI")); !bytes.Equal(got, efi) {
				t.Error("BOOTX64.EFI written after Clear differs")
			}
		})
	}
}
