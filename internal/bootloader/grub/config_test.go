package grub

import (
	"strings"
	"testing"
	"time"
)

func TestBootPath(t *testing.T) {
	tests := []struct {
		in       string
		separate bool
		want     string
	}{
		{"/ostree/debian-1/vmlinuz", true, "/ostree/debian-1/vmlinuz"},
		{"/boot/ostree/debian-1/vmlinuz", true, "/ostree/debian-1/vmlinuz"},
		{"/ostree/debian-1/vmlinuz", false, "/boot/ostree/debian-1/vmlinuz"},
		{"/boot/ostree/debian-1/vmlinuz", false, "/boot/ostree/debian-1/vmlinuz"},
		{"ostree/x", true, "/ostree/x"},
		{"/bootfoo/x", true, "/bootfoo/x"},
		{"/bootfoo/x", false, "/boot/bootfoo/x"},
	}
	for _, tt := range tests {
		if got := bootPath(tt.in, tt.separate); got != tt.want {
			t.Errorf("bootPath(%q, %v) = %q, want %q", tt.in, tt.separate, got, tt.want)
		}
	}
}

func TestQuote(t *testing.T) {
	tests := []struct{ in, want, word string }{
		{"Debian 12", "'Debian 12'", "'Debian 12'"},
		{"it's", `'it'\''s'`, `'it'\''s'`},
		{"$x; halt", "'$x; halt'", "'$x; halt'"},
		{"/ostree/a/vmlinuz-6.1", "'/ostree/a/vmlinuz-6.1'", "/ostree/a/vmlinuz-6.1"},
		{"", "''", "''"},
	}
	for _, tt := range tests {
		if got := quote(tt.in); got != tt.want {
			t.Errorf("quote(%q) = %s, want %s", tt.in, got, tt.want)
		}
		if got := quoteWord(tt.in); got != tt.word {
			t.Errorf("quoteWord(%q) = %s, want %s", tt.in, got, tt.word)
		}
	}
}

func TestConfig(t *testing.T) {
	entries := []Entry{
		{ID: "ostree-2-default", Title: "Debian 'new' (ostree:0)", Linux: "/boot/ostree/d-2/vmlinuz",
			Initrd: []string{"/boot/ostree/d-2/initramfs.img"}, Options: "root=UUID=r rw ostree=/ostree/boot.1/d/2/0"},
		{ID: "ostree-1-default", Title: "Debian old (ostree:1)", Linux: "/boot/ostree/d-1/vmlinuz",
			Initrd: []string{"/boot/ostree/d-1/ucode.img", "/boot/ostree/d-1/initramfs.img"}},
	}
	tests := []struct {
		name    string
		opts    ConfigOptions
		want    []string
		wantNot []string
		wantErr bool
	}{
		{
			name: "separate boot, bootprefix paths, defaults",
			opts: ConfigOptions{BootUUID: "11111111-2222-3333-4444-555555555555", BootIsSeparate: true},
			want: []string{
				"if serial --unit=0 --speed=115200; then\n",
				"  terminal_input serial console\n  terminal_output serial console\nfi\n",
				"set timeout=1\n", "set default=0\n",
				"search --no-floppy --fs-uuid --set=root 11111111-2222-3333-4444-555555555555\n",
				"function load_video {\n  insmod all_video\n}\n",
				"menuentry 'Debian '\\''new'\\'' (ostree:0)' --id 'ostree-2-default' {\n  load_video\n" +
					"  linux /ostree/d-2/vmlinuz root=UUID=r rw ostree=/ostree/boot.1/d/2/0\n" +
					"  initrd /ostree/d-2/initramfs.img\n}\n",
				"  linux /ostree/d-1/vmlinuz\n  initrd /ostree/d-1/ucode.img /ostree/d-1/initramfs.img\n",
			},
			wantNot: []string{"/boot/ostree"},
		},
		{
			name: "boot on root, timeout, speed",
			opts: ConfigOptions{BootUUID: "ABCD-1234", Timeout: 5 * time.Second, SerialSpeed: 9600},
			want: []string{"set timeout=5\n", "serial --unit=0 --speed=9600; then\n",
				"linux /boot/ostree/d-2/vmlinuz ", "initrd /boot/ostree/d-2/initramfs.img\n"},
		},
		{
			name: "no timeout",
			opts: ConfigOptions{BootUUID: "abc", Timeout: -1},
			want: []string{"set timeout=0\n"},
		},
		{name: "bad uuid", opts: ConfigOptions{BootUUID: "x; reboot"}, wantErr: true},
		{name: "empty uuid", opts: ConfigOptions{}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Config(entries, tt.opts)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			cfg := string(out)
			for _, w := range tt.want {
				if !strings.Contains(cfg, w) {
					t.Errorf("config lacks %q:\n%s", w, cfg)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(cfg, w) {
					t.Errorf("config contains %q:\n%s", w, cfg)
				}
			}
			// The newest entry (first) must be the first menuentry: default=0.
			if !tt.wantErr && strings.Index(cfg, "ostree-2-default") > strings.Index(cfg, "ostree-1-default") {
				t.Errorf("entries out of order:\n%s", cfg)
			}
		})
	}
}
