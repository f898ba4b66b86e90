package grub

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestParseBLS(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Entry
		wantErr bool
	}{
		{
			name: "ostree 2022.7",
			in: "title Debian GNU/Linux 12 (bookworm) 1 (ostree:0)\n" +
				"version 1\n" +
				"options root=UUID=abc rw console=ttyS0,115200 ostree=/ostree/boot.1/debian/4c32/0\n" +
				"linux /ostree/debian-4c32/vmlinuz-6.1.0-50-cloud-amd64\n" +
				"initrd /ostree/debian-4c32/initramfs-6.1.0-50-cloud-amd64.img\n",
			want: Entry{
				Title:   "Debian GNU/Linux 12 (bookworm) 1 (ostree:0)",
				Version: "1",
				Options: "root=UUID=abc rw console=ttyS0,115200 ostree=/ostree/boot.1/debian/4c32/0",
				Linux:   "/ostree/debian-4c32/vmlinuz-6.1.0-50-cloud-amd64",
				Initrd:  []string{"/ostree/debian-4c32/initramfs-6.1.0-50-cloud-amd64.img"},
			},
		},
		{
			name: "tabs, comments, repeated initrd and options, unknown keys",
			in: "# comment\n\ntitle\tFedora  \nlinux\t/boot/vmlinuz\ninitrd /boot/ucode.img\n" +
				"initrd /boot/a.img /boot/b.img\noptions quiet\noptions  rw\nmachine-id 1234\n" +
				"sort-key fedora\ndevicetree /dtb\n",
			want: Entry{
				Title: "Fedora", Linux: "/boot/vmlinuz",
				Initrd:  []string{"/boot/ucode.img", "/boot/a.img", "/boot/b.img"},
				Options: "quiet rw", SortKey: "fedora", DeviceTree: "/dtb",
			},
		},
		{name: "no linux", in: "title x\ninitrd /i\n", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBLS([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestReadEntriesOrder(t *testing.T) {
	boot := t.TempDir()
	dir := filepath.Join(boot, "loader", "entries")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// ostree names entries ostree-N-<stateroot>.conf with version N; the
	// highest N is the newest deployment and must come first, also past 9.
	for _, n := range []string{"2", "10", "1", "9"} {
		data := "title t" + n + "\nversion " + n + "\nlinux /ostree/k" + n + "\n"
		if err := os.WriteFile(filepath.Join(dir, "ostree-"+n+"-default.conf"), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Not a .conf file: ignored.
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	entries, err := ReadEntries(boot)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.ID)
	}
	want := []string{"ostree-10-default", "ostree-9-default", "ostree-2-default", "ostree-1-default"}
	if !reflect.DeepEqual(ids, want) {
		t.Errorf("order = %v, want %v", ids, want)
	}
}

func TestReadEntriesErrors(t *testing.T) {
	if _, err := ReadEntries(t.TempDir()); err == nil {
		t.Error("no entries: want error")
	}
	boot := t.TempDir()
	dir := filepath.Join(boot, "loader", "entries")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.conf"), []byte("title x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadEntries(boot); err == nil {
		t.Error("entry without linux: want error")
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1", "1", 0},
		{"2", "10", -1},
		{"10", "9", 1},
		{"ostree-10-default", "ostree-9-default", 1},
		{"6.1.0-50", "6.1.0-9", 1},
		{"1.a", "1.10", -1},
		{"007", "7", 0},
		{"1", "1.1", -1},
		{"", "1", -1},
		{"abc", "abd", -1},
	}
	for _, tt := range tests {
		if got := compareVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := compareVersions(tt.b, tt.a); got != -tt.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}
