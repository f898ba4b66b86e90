package e2e

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
)

func hashFile(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

type plan struct {
	Version int    `json:"version"`
	Verb    string `json:"verb"`
	Image   struct {
		Kernel string `json:"kernel"`
		Origin string `json:"origin"`
	} `json:"image"`
	Target struct {
		Device     string `json:"device"`
		RootFS     string `json:"root-filesystem"`
		Partitions []struct {
			Name string `json:"name"`
		} `json:"partitions"`
	} `json:"target"`
	Stateroot   string   `json:"stateroot"`
	Kargs       []string `json:"kargs"`
	BoundImages []string `json:"bound-images"`
	Tools       []struct {
		Tool, From string
	} `json:"tools"`
}

// TestDryRunToDisk prints the plan under a conflicting host and proves the
// disk image is byte-for-byte unchanged.
func TestDryRunToDisk(t *testing.T) {
	requireRoot(t)
	archive := fixture(t, "bookworm")
	disk := sparseDisk(t, 4<<30)
	before := hashFile(t, disk)
	loops, mounts := hostState(t)
	out, stderr, code := bootlaceRun(t, conflictingHost(t), "install", "to-disk", "--via-loopback", "--dry-run",
		"--source-imgref", "oci-archive:"+archive, "--target-imgref", "quay.io/bootlace/fixture:bookworm",
		"--karg-delete", "bootlace.poweroff", disk)
	if code != 0 {
		t.Fatalf("dry run: exit %d\n%s", code, tail(stderr, 40))
	}
	checkHostUnchanged(t, loops, mounts)
	if after := hashFile(t, disk); after != before {
		t.Fatal("a dry run changed the target disk image")
	}
	var p plan
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("plan JSON: %v\n%s", err, out)
	}
	if p.Version != 1 || p.Verb != "to-disk" || p.Target.Device != disk || p.Target.RootFS != "ext4" || p.Stateroot != "default" {
		t.Errorf("plan %+v", p)
	}
	var names []string
	for _, pp := range p.Target.Partitions {
		names = append(names, pp.Name)
	}
	if !reflect.DeepEqual(names, []string{"BIOS-BOOT", "EFI-SYSTEM", "boot", "root"}) {
		t.Errorf("partitions %v", names)
	}
	if err := inOrder(p.Kargs, []string{"root=UUID=", "rw", "boot=UUID=", "console=ttyS0,115200", "bootlace.fixture=install-config", "bootlace.fixture.kargsd=1"}); err != nil {
		t.Errorf("kargs %q: %v", p.Kargs, err)
	}
	for _, k := range p.Kargs {
		if strings.HasPrefix(k, "host.leak") || k == "bootlace.poweroff" {
			t.Errorf("kargs %q contain %s", p.Kargs, k)
		}
	}
	if !reflect.DeepEqual(p.BoundImages, []string{boundA, boundB}) {
		t.Errorf("bound images %q", p.BoundImages)
	}
	for _, tool := range p.Tools {
		if strings.HasPrefix(tool.Tool, "mkfs") || tool.Tool == "ostree" || tool.Tool == "grub-mkimage" {
			if tool.From != "image" {
				t.Errorf("tool %s from %s, want the image", tool.Tool, tool.From)
			}
		}
	}
}

func TestDryRunToFilesystem(t *testing.T) {
	requireRoot(t)
	archive := fixture(t, "trixie")
	pd := prepareDisk(t)
	out := bootlace(t, "install", "to-filesystem", "--dry-run", "--source-imgref", "oci-archive:"+archive, pd.root)
	var p plan
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("plan JSON: %v\n%s", err, out)
	}
	if p.Verb != "to-filesystem" || !strings.HasPrefix(p.Image.Kernel, "6.12") {
		t.Errorf("plan %+v", p)
	}
	ents, err := os.ReadDir(pd.root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != "lost+found" && e.Name() != "boot" {
			t.Errorf("dry run left %s on the target", e.Name())
		}
	}
	pd.release(t)
}

func TestPrintConfiguration(t *testing.T) {
	requireRoot(t)
	archive := fixture(t, "bookworm")
	tests := []struct {
		all  bool
		want map[string]any
	}{
		{false, map[string]any{"root-fs-type": "ext4", "filesystem": map[string]any{"root": map[string]any{"type": "ext4"}}, "block": []any{"direct"}}},
		{true, map[string]any{"root-fs-type": "ext4", "filesystem": map[string]any{"root": map[string]any{"type": "ext4"}}, "block": []any{"direct"},
			"kargs": []any{"console=ttyS0,115200", "bootlace.fixture=install-config"}}},
	}
	for _, tt := range tests {
		args := []string{"install", "print-configuration", "--source-imgref", "oci-archive:" + archive}
		if tt.all {
			args = append(args, "--all")
		}
		out, stderr, code := bootlaceRun(t, conflictingHost(t), args...)
		if code != 0 {
			t.Fatalf("print-configuration: exit %d\n%s", code, stderr)
		}
		var got map[string]any
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("all=%v: got %v\nwant %v", tt.all, got, tt.want)
		}
	}
}
