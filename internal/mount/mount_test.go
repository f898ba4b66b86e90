package mount

import "testing"

func TestParseLine(t *testing.T) {
	in, ok := parseLine(`36 35 98:0 /mnt1 /mnt/with\040space rw,noatime master:1 - ext4 /dev/loop0p3 rw,errors=continue`)
	if !ok {
		t.Fatal("not parsed")
	}
	want := Info{ID: 36, Parent: 35, Major: 98, Minor: 0, Root: "/mnt1", Target: "/mnt/with space", Options: "rw,noatime", FSType: "ext4", Source: "/dev/loop0p3", SuperOpts: "rw,errors=continue"}
	if in != want {
		t.Fatalf("got %+v\nwant %+v", in, want)
	}
	if _, ok := parseLine("garbage"); ok {
		t.Fatal("garbage parsed")
	}
}
