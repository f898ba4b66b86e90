package blockdev

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestGUID(t *testing.T) {
	g, err := ParseGUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
	if err != nil {
		t.Fatal(err)
	}
	if g != TypeESP || g.String() != "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" {
		t.Errorf("parsed %s", g)
	}
	// On disk the first three fields are little endian (UEFI spec, ESP example).
	wantDisk := []byte{0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b}
	if !bytes.Equal(g.disk(), wantDisk) {
		t.Errorf("disk form % x", g.disk())
	}
	if guidFromDisk(wantDisk) != g {
		t.Error("guidFromDisk does not invert disk")
	}
	for _, bad := range []string{"", "c12a7328f81f11d2ba4b00a0c93ec93b", "g12a7328-f81f-11d2-ba4b-00a0c93ec93b", "c12a7328-f81f-11d2-ba4b-00a0c93ec93"} {
		if _, err := ParseGUID(bad); err == nil {
			t.Errorf("ParseGUID(%q) succeeded", bad)
		}
	}
	u := NewUUID()
	if len(u) != 36 || u[14] != '4' || !strings.ContainsAny(u[19:20], "89ab") || u != strings.ToLower(u) {
		t.Errorf("NewUUID() = %q", u)
	}
	if NewUUID() == u {
		t.Error("NewUUID repeats")
	}
}

func sparse(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
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

func tool(t *testing.T, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is needed to verify the GPT: apt-get install %s", name, pkg)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// sfdiskTable is the part of `sfdisk -J` output the tests check.
type sfdiskTable struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		SectorSize int    `json:"sectorsize"`
		Partitions []struct {
			Node  string `json:"node"`
			Start uint64 `json:"start"`
			Size  uint64 `json:"size"`
			Type  string `json:"type"`
			UUID  string `json:"uuid"`
			Name  string `json:"name"`
			Attrs string `json:"attrs"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

// verifyWithHostTools checks dev's GPT with sfdisk, sgdisk and partx, and
// that sfdisk reads back exactly parts.
func verifyWithHostTools(t *testing.T, dev string, parts []Partition, diskGUID GUID) {
	t.Helper()
	tool(t, "sfdisk", "fdisk")
	tool(t, "sgdisk", "gdisk")
	tool(t, "partx", "util-linux")
	run(t, "sfdisk", "--verify", dev)
	if out := run(t, "sgdisk", "-v", dev); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v:\n%s", out)
	}
	var tab sfdiskTable
	if err := json.Unmarshal([]byte(run(t, "sfdisk", "-J", dev)), &tab); err != nil {
		t.Fatal(err)
	}
	pt := tab.PartitionTable
	if pt.Label != "gpt" || !strings.EqualFold(pt.ID, diskGUID.String()) {
		t.Errorf("sfdisk: label %q id %q, want gpt %s", pt.Label, pt.ID, diskGUID)
	}
	if len(pt.Partitions) != len(parts) {
		t.Fatalf("sfdisk sees %d partitions, want %d", len(pt.Partitions), len(parts))
	}
	for i, p := range parts {
		got := pt.Partitions[i]
		ss := uint64(pt.SectorSize)
		if got.Start*ss != p.Start || got.Size*ss != p.Size || !strings.EqualFold(got.Type, p.Type.String()) ||
			!strings.EqualFold(got.UUID, p.UUID.String()) || got.Name != p.Name {
			t.Errorf("sfdisk partition %d = %+v, want %+v", i+1, got, p)
		}
		if p.Attributes&AttrLegacyBIOSBootable != 0 && got.Attrs != "LegacyBIOSBootable" {
			t.Errorf("partition %d attrs %q", i+1, got.Attrs)
		}
	}
	out := run(t, "partx", "--show", "-o", "NR,START,SECTORS,NAME", "-g", dev)
	if n := len(strings.Split(strings.TrimSpace(out), "\n")); n != len(parts) {
		t.Errorf("partx --show lists %d partitions:\n%s", n, out)
	}
}

func TestWriteGPTFile(t *testing.T) {
	img := sparse(t, 8*GiB)
	parts, err := PlanBootcLayout(8*GiB, 512, LayoutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	parts[3].Name = "root-ü" // non-ASCII names are UTF-16
	disk, _ := NewGUID()
	if err := WriteGPT(img, parts, disk); err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		if p.UUID.IsZero() {
			t.Fatalf("%s got no UUID", p.Name)
		}
	}
	verifyWithHostTools(t, img, parts, disk)

	l, err := ReadGPT(img)
	if err != nil {
		t.Fatal(err)
	}
	if l.DiskGUID != disk || len(l.Partitions) != len(parts) {
		t.Fatalf("ReadGPT = %+v", l)
	}
	for i := range parts {
		if l.Partitions[i] != parts[i] {
			t.Errorf("ReadGPT partition %d = %+v, want %+v", i, l.Partitions[i], parts[i])
		}
	}

	// Protective MBR: boot code empty, one 0xEE entry.
	mbr := make([]byte, 512)
	f, _ := os.Open(img)
	f.ReadAt(mbr, 0)
	f.Close()
	if !bytes.Equal(mbr[:440], make([]byte, 440)) || mbr[450] != 0xee || mbr[510] != 0x55 || mbr[511] != 0xaa {
		t.Errorf("protective MBR wrong: type %#x sig % x", mbr[450], mbr[510:])
	}

	if err := WipeTable(img); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadGPT(img); !errors.Is(err, errNoGPT) {
		t.Errorf("ReadGPT after WipeTable: %v", err)
	}
	if out, err := exec.Command("sfdisk", "-d", img).CombinedOutput(); err == nil {
		t.Errorf("sfdisk still finds a table after WipeTable:\n%s", out)
	}
	if out, _ := exec.Command("sgdisk", "-v", img).CombinedOutput(); !bytes.Contains(out, []byte("Creating new GPT")) {
		t.Errorf("sgdisk still finds a GPT after WipeTable:\n%s", out)
	}
}

func TestGPT4Kn(t *testing.T) {
	img := sparse(t, 2*GiB)
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	parts, err := PlanBootcLayout(2*GiB, 4096, LayoutOptions{NoBIOSBoot: true, NoBoot: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := writeGPT(f, 2*GiB, 4096, parts, GUID{}); err != nil {
		t.Fatal(err)
	}
	l, err := readGPT(f, 2*GiB, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if l.FirstUsable != 6*4096 || len(l.Partitions) != 2 || l.Partitions[1] != parts[1] {
		t.Errorf("4Kn GPT read back as %+v", l)
	}
}

func TestValidate(t *testing.T) {
	g, _ := newGeometry(1*GiB, 512)
	ok := Partition{Number: 1, Name: "a", Type: TypeLinuxData, Start: MiB, Size: MiB}
	tests := []struct {
		name string
		p    []Partition
		want string
	}{
		{"ok", []Partition{ok}, ""},
		{"number 0", []Partition{{Number: 0, Type: TypeLinuxData, Start: MiB, Size: MiB}}, "number must be"},
		{"number 129", []Partition{{Number: 129, Type: TypeLinuxData, Start: MiB, Size: MiB}}, "number must be"},
		{"duplicate", []Partition{ok, {Number: 1, Type: TypeLinuxData, Start: 4 * MiB, Size: MiB}}, "used twice"},
		{"no type", []Partition{{Number: 1, Start: MiB, Size: MiB}}, "no type"},
		{"zero size", []Partition{{Number: 1, Type: TypeLinuxData, Start: MiB}}, "size is zero"},
		{"unaligned", []Partition{{Number: 1, Type: TypeLinuxData, Start: MiB + 1, Size: MiB}}, "not a multiple"},
		{"before first usable", []Partition{{Number: 1, Type: TypeLinuxData, Start: 512, Size: MiB}}, "outside the usable"},
		{"past the end", []Partition{{Number: 1, Type: TypeLinuxData, Start: MiB, Size: GiB}}, "outside the usable"},
		{"overlap", []Partition{ok, {Number: 2, Type: TypeLinuxData, Start: MiB + MiB/2, Size: MiB}}, "overlaps"},
		{"long name", []Partition{{Number: 1, Name: strings.Repeat("x", 37), Type: TypeLinuxData, Start: MiB, Size: MiB}}, "longer than 36"},
	}
	for _, tc := range tests {
		err := validate(tc.p, g)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestPartitionPath(t *testing.T) {
	for dev, want := range map[string]string{
		"/dev/loop0":   "/dev/loop0p3",
		"/dev/sda":     "/dev/sda3",
		"/dev/nvme0n1": "/dev/nvme0n1p3",
		"/dev/vdb":     "/dev/vdb3",
		"/dev/mmcblk0": "/dev/mmcblk0p3",
	} {
		if got := PartitionPath(dev, 3); got != want {
			t.Errorf("PartitionPath(%s, 3) = %s, want %s", dev, got, want)
		}
	}
}
