package blockdev

import (
	"encoding/binary"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseMountinfo(t *testing.T) {
	const info = `22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
90 27 7:3 / /mnt/with\040space rw,relatime shared:5 - ext4 /dev/loop0p3 rw
91 27 0:55 /@ /srv rw,relatime - btrfs /dev/loop0p4 rw
92 27 0:56 / /other rw - btrfs /dev/sdz1 rw
`
	p3, p4 := unix.Mkdev(7, 3), unix.Mkdev(7, 4)
	devs := map[uint64]string{p3: "/dev/loop0p3", p4: "/dev/loop0p4"}
	// btrfs shows an anonymous 0:N device; the source resolves to the partition.
	src := func(s string) (uint64, bool) {
		if s == "/dev/loop0p4" {
			return p4, true
		}
		return 0, false
	}
	got, err := parseMountinfo(strings.NewReader(info), devs, src)
	if err != nil {
		t.Fatal(err)
	}
	want := []Mount{{Device: "/dev/loop0p3", Target: "/mnt/with space"}, {Device: "/dev/loop0p4", Target: "/srv"}}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mount %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestProbeSignature(t *testing.T) {
	buf := func(f func(b []byte)) []byte {
		b := make([]byte, 128<<10)
		f(b)
		return b
	}
	tests := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", make([]byte, 4096), ""},
		{"short", []byte{1, 2}, ""},
		{"ext4", buf(func(b []byte) { binary.LittleEndian.PutUint16(b[1080:], 0xef53) }), "ext4"},
		{"xfs", buf(func(b []byte) { copy(b, "XFSB") }), "xfs"},
		{"btrfs", buf(func(b []byte) { copy(b[65600:], "_BHRfS_M") }), "btrfs"},
		{"luks", buf(func(b []byte) { copy(b, "LUKS\xba\xbe") }), "crypto_LUKS"},
		{"lvm", buf(func(b []byte) { copy(b[512:], "LABELONE") }), "LVM2_member"},
		{"md 1.2", buf(func(b []byte) { binary.LittleEndian.PutUint32(b[4096:], 0xa92b4efc) }), "linux_raid_member"},
		{"swap", buf(func(b []byte) { copy(b[4086:], "SWAPSPACE2") }), "swap"},
		{"vfat", buf(func(b []byte) { copy(b[82:], "FAT32   "); b[510], b[511] = 0x55, 0xaa }), "vfat"},
	}
	for _, tc := range tests {
		if got := probeSignature(tc.b); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestCheckUsableMessages(t *testing.T) {
	base := Disk{Path: "/dev/loop9"}
	tests := []struct {
		name string
		mod  func(d *Disk)
		wipe bool
		want string // "" = usable
	}{
		{"empty", func(d *Disk) {}, false, ""},
		{"root", func(d *Disk) { d.HoldsRoot = true }, true, "holds the running system's root filesystem"},
		{"mounted", func(d *Disk) { d.Mounts = []Mount{{Device: "/dev/loop9p3", Target: "/mnt"}} }, true, "unmount /dev/loop9p3 (mounted at /mnt)"},
		{"swap", func(d *Disk) { d.Swaps = []string{"/dev/loop9p2"} }, true, "swapoff /dev/loop9p2"},
		{"lvm", func(d *Disk) { d.Holders = []Holder{{"dm-0", "/dev/loop9p4"}} }, true, "in use by dm-0 (LVM or device-mapper, on /dev/loop9p4)"},
		{"md", func(d *Disk) { d.Holders = []Holder{{"md127", "/dev/loop9"}} }, true, "MD RAID"},
		{"table", func(d *Disk) { d.Table = "gpt" }, false, "has a partition table (gpt) (pass --wipe to erase it)"},
		{"table wiped", func(d *Disk) { d.Table = "gpt" }, true, ""},
		{"partitions", func(d *Disk) { d.Partitions = make([]DiskPartition, 2) }, false, "has 2 partitions"},
		{"signature", func(d *Disk) { d.Signature = "ext4" }, false, "has a ext4 signature"},
		{"read-only", func(d *Disk) { d.ReadOnly = true }, true, "read-only"},
	}
	for _, tc := range tests {
		d := base
		tc.mod(&d)
		err := CheckUsable(&d, tc.wipe)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "/dev/loop9") {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
		assertTarget(t, err)
	}
}
