package grub

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bootlace/bootlace/internal/errs"
)

// hostRunner runs the host's tools as if the host were the image (Root
// "/"), mapping OutMount to outDir, so tests need no sandbox.
type hostRunner struct{ last []string }

func (h *hostRunner) Run(ctx context.Context, outDir string, argv []string) error {
	args := make([]string, len(argv))
	for i, a := range argv {
		if rest, ok := strings.CutPrefix(a, OutMount); ok {
			a = outDir + rest
		}
		args[i] = a
	}
	h.last = args
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %w: %s", args, err, out)
	}
	return nil
}

func requireHostPayload(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("this test runs the host's GRUB payload as the image's; install grub-efi-amd64-bin grub-pc-bin grub-common: %v", err)
		}
	}
}

const testUUID = "11111111-2222-3333-4444-555555555555"

// TestBuildHost builds both images from the host payload and checks them
// against a direct grub-mkimage run with the same arguments: grub-mkimage
// is deterministic, so they must be byte-identical.
func TestBuildHost(t *testing.T) {
	requireHostPayload(t, "/usr/bin/grub-mkimage", efiModDir+"/linux.mod", bootImg)
	ctx := context.Background()
	for _, separate := range []bool{true, false} {
		opts := ImageOptions{Root: "/", BootUUID: testUUID, BootIsSeparate: separate, BootFSType: "ext4", TempDir: t.TempDir()}
		t.Run(fmt.Sprintf("efi separate=%v", separate), func(t *testing.T) {
			r := &hostRunner{}
			img, err := BuildEFI(ctx, r, opts)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(img, []byte("MZ")) {
				t.Errorf("not a PE image: % x", img[:4])
			}
			t.Logf("BOOTX64.EFI: %d bytes", len(img))
			checkSameAsDirect(t, r.last, img, opts)
		})
		t.Run(fmt.Sprintf("bios separate=%v", separate), func(t *testing.T) {
			r := &hostRunner{}
			bi, err := BuildBIOSCore(ctx, r, opts)
			if err != nil {
				t.Fatal(err)
			}
			hostBoot, _ := os.ReadFile(bootImg)
			if !bytes.Equal(bi.Boot, hostBoot) {
				t.Error("boot.img differs from the payload's")
			}
			n := (len(bi.Core) + 511) / 512
			t.Logf("core.img: %d bytes, %d sectors", len(bi.Core), n)
			if n > maxCoreSectors {
				t.Errorf("core.img has %d sectors", n)
			}
			// grub-mkimage's placeholder blocklist, which patchCore rewrites.
			if s := binary.LittleEndian.Uint64(bi.Core[0x1F4:]); s != 2 {
				t.Errorf("blocklist placeholder start = %d, want 2", s)
			}
			if l := binary.LittleEndian.Uint16(bi.Core[0x1FC:]); int(l) != n-1 {
				t.Errorf("blocklist placeholder len = %d, want %d", l, n-1)
			}
			checkSameAsDirect(t, r.last, bi.Core, opts)
		})
	}
}

// checkSameAsDirect reruns the recorded grub-mkimage command with its own
// early config and output, and compares the result.
func checkSameAsDirect(t *testing.T, args []string, img []byte, opts ImageOptions) {
	t.Helper()
	dir := t.TempDir()
	early, err := EarlyConfig(opts.BootUUID, opts.BootIsSeparate)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "early.cfg"), early, 0o644); err != nil {
		t.Fatal(err)
	}
	direct := slices.Clone(args)
	for i := range direct {
		switch {
		case i > 0 && direct[i-1] == "-c":
			direct[i] = filepath.Join(dir, "early.cfg")
		case i > 0 && direct[i-1] == "-o":
			direct[i] = filepath.Join(dir, "direct.img")
		}
	}
	wantPrefix := "/grub"
	if !opts.BootIsSeparate {
		wantPrefix = "/boot/grub"
	}
	if i := slices.Index(direct, "-p"); i < 0 || direct[i+1] != wantPrefix {
		t.Errorf("prefix argument wrong in %v", direct)
	}
	if out, err := exec.Command(direct[0], direct[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v: %s", direct, err, out)
	}
	want, err := os.ReadFile(filepath.Join(dir, "direct.img"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(img, want) {
		t.Errorf("image differs from direct grub-mkimage run %v", direct)
	}
}

// recordRunner records the call and what the early config said.
type recordRunner struct {
	argv  []string
	early string
}

func (r *recordRunner) Run(_ context.Context, outDir string, argv []string) error {
	r.argv = argv
	b, err := os.ReadFile(filepath.Join(outDir, "early.cfg"))
	if err != nil {
		return err
	}
	r.early = string(b)
	return os.WriteFile(filepath.Join(outDir, "out.img"), make([]byte, 4096), 0o644)
}

// fakeRoot makes an image tree with grub-mkimage and the given modules.
func fakeRoot(t *testing.T, modDir string, mods ...string) string {
	t.Helper()
	root := t.TempDir()
	for _, p := range []string{"usr/bin/grub-mkimage", strings.TrimPrefix(bootImg, "/")} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), make([]byte, 512), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	d := filepath.Join(root, modDir)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, m := range mods {
		if err := os.WriteFile(filepath.Join(d, m+".mod"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestBuildArgs(t *testing.T) {
	root := fakeRoot(t, efiModDir, "part_gpt", "search", "search_fs_uuid", "normal", "linux", "xfs", "ext2", "efi_gop", "notused")
	r := &recordRunner{}
	img, err := BuildEFI(context.Background(), r, ImageOptions{Root: root, BootUUID: testUUID, BootFSType: "xfs"})
	if err != nil {
		t.Fatal(err)
	}
	if len(img) != 4096 {
		t.Errorf("returned %d bytes, want the runner's output", len(img))
	}
	want := []string{"/usr/bin/grub-mkimage", "-O", "x86_64-efi", "-d", efiModDir, "-p", "/boot/grub",
		"-c", OutMount + "/early.cfg", "-o", OutMount + "/out.img",
		"part_gpt", "ext2", "xfs", "search", "search_fs_uuid", "normal", "linux", "efi_gop"}
	if !slices.Equal(r.argv, want) {
		t.Errorf("argv = %v\nwant %v", r.argv, want)
	}
	for _, line := range []string{"search.fs_uuid " + testUUID + " root\n", "set prefix=($root)/boot/grub\n", "terminal_output serial console\n"} {
		if !strings.Contains(r.early, line) {
			t.Errorf("early config lacks %q:\n%s", line, r.early)
		}
	}
}

func TestBuildMissingPayload(t *testing.T) {
	ctx := context.Background()
	full := []string{"part_gpt", "search", "search_fs_uuid", "normal", "linux", "ext2", "biosdisk"}
	tests := []struct {
		name    string
		root    string
		bios    bool
		fstype  string
		uuid    string
		wantMsg string
		kind    errs.Kind
	}{
		{name: "empty root efi", root: t.TempDir(), wantMsg: "grub-efi-amd64-bin", kind: errs.Image},
		{name: "empty root bios", root: t.TempDir(), bios: true, wantMsg: "grub-pc-bin", kind: errs.Image},
		{name: "no linux module", root: fakeRoot(t, efiModDir, "part_gpt", "search", "search_fs_uuid", "normal", "ext2"),
			wantMsg: "linux", kind: errs.Image},
		{name: "no xfs driver", root: fakeRoot(t, efiModDir, full...), fstype: "xfs", wantMsg: "xfs", kind: errs.Image},
		{name: "no fs driver", root: fakeRoot(t, efiModDir, "part_gpt", "search", "search_fs_uuid", "normal", "linux"),
			wantMsg: "filesystem driver", kind: errs.Image},
		{name: "no biosdisk", root: fakeRoot(t, biosModDir, "part_gpt", "search", "search_fs_uuid", "normal", "linux", "ext2"),
			bios: true, wantMsg: "biosdisk", kind: errs.Image},
		{name: "modules of the other platform only", root: fakeRoot(t, biosModDir, full...), wantMsg: "x86_64-efi", kind: errs.Image},
		{name: "bad uuid", root: fakeRoot(t, efiModDir, full...), uuid: "$(x)", wantMsg: "UUID", kind: errs.Internal},
		{name: "unknown fs", root: fakeRoot(t, efiModDir, full...), fstype: "zfs", wantMsg: "zfs", kind: errs.Image},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			uuid := tt.uuid
			if uuid == "" {
				uuid = testUUID
			}
			opts := ImageOptions{Root: tt.root, BootUUID: uuid, BootFSType: tt.fstype}
			var err error
			if tt.bios {
				_, err = BuildBIOSCore(ctx, &recordRunner{}, opts)
			} else {
				_, err = BuildEFI(ctx, &recordRunner{}, opts)
			}
			if err == nil {
				t.Fatal("want error")
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tt.wantMsg)
			}
			if k := errs.KindOf(err); k != tt.kind {
				t.Errorf("kind %v, want %v", k, tt.kind)
			}
		})
	}
}

// TestPayloadSymlinkStaysInRoot: an image's absolute symlink must resolve
// inside the image, never to the host's file of the same name.
func TestPayloadSymlinkStaysInRoot(t *testing.T) {
	requireHostPayload(t, "/usr/bin/grub-mkimage")
	root := fakeRoot(t, efiModDir, "part_gpt", "search", "search_fs_uuid", "normal", "linux", "ext2")
	mk := filepath.Join(root, "usr/bin/grub-mkimage")
	if err := os.Remove(mk); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/usr/bin/grub-mkimage", mk); err != nil {
		t.Fatal(err)
	}
	_, err := BuildEFI(context.Background(), &recordRunner{}, ImageOptions{Root: root, BootUUID: testUUID})
	if err == nil || !strings.Contains(err.Error(), "grub-mkimage not found") {
		t.Errorf("err = %v, want grub-mkimage not found", err)
	}
	// A relative in-root link is fine.
	if err := os.Remove(mk); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "usr/bin/grub2-real"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/usr/bin/grub2-real", mk); err != nil {
		t.Fatal(err)
	}
	if _, err := BuildEFI(context.Background(), &recordRunner{}, ImageOptions{Root: root, BootUUID: testUUID}); err != nil {
		t.Errorf("in-root link: %v", err)
	}
}
