package qemu

import (
	"reflect"
	"strings"
	"testing"
)

func TestCleanLine(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"with cr\r", "with cr"},
		{"\x1b[0m\x1b[37m\x1b[40m\x1b[H\x1b[J\x1b[1;1HTESTBED-OK", "TESTBED-OK"},
		{"[  \x1b[0;32m  OK  \x1b[0m] Reached target", "[    OK  ] Reached target"},
		{"\x1b[?25lcursor\x1b[?25h", "cursor"},
		{"tab\tkept\x00\x08", "tab\tkept"},
		{"\x1bcreset", "creset"},
	}
	for _, tc := range tests {
		if got := cleanLine([]byte(tc.in)); got != tc.want {
			t.Errorf("cleanLine(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestConsole(t *testing.T) {
	tests := []struct {
		name    string
		chunks  []string
		markers []string
		wantLog string
		seen    []string
		failed  string
		linux   bool
		all     bool
	}{
		{
			name:    "markers across chunks",
			chunks:  []string{"BdsDxe: start\r\nA-O", "K\r\n[    0.000000] Linux vers", "ion 6.1.0\r\nB-OK\n"},
			markers: []string{"B-OK", "A-OK", "A-OK"},
			wantLog: "BdsDxe: start\nA-OK\n[    0.000000] Linux version 6.1.0\nB-OK\n",
			seen:    []string{"A-OK", "B-OK"}, linux: true, all: true,
		},
		{
			name:    "prompt without newline fails at once",
			chunks:  []string{"error: no such device\r\n", "grub resc", "ue> "},
			markers: []string{"OK"},
			wantLog: "error: no such device\ngrub rescue> \n",
			failed:  "grub rescue>",
		},
		{
			name:    "escape split across chunks",
			chunks:  []string{"\x1b[0", "mKernel panic - not syncing: VFS\n"},
			wantLog: "Kernel panic - not syncing: VFS\n",
			failed:  "Kernel panic",
		},
		{
			name:    "no markers is never all seen",
			chunks:  []string{"Linux version 6.12\n"},
			wantLog: "Linux version 6.12\n", linux: true,
		},
		{
			name:    "first fail pattern is kept",
			chunks:  []string{"You are in emergency mode.\nKernel panic\n"},
			wantLog: "You are in emergency mode.\nKernel panic\n",
			failed:  "emergency mode",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var live strings.Builder
			c := newConsole(tc.markers, DefaultFailPatterns, &live)
			for _, ch := range tc.chunks {
				c.feed([]byte(ch))
			}
			c.flush()
			if got := c.log.String(); got != tc.wantLog {
				t.Errorf("log = %q, want %q", got, tc.wantLog)
			}
			if live.String() != tc.wantLog {
				t.Errorf("live output = %q, want the log", live.String())
			}
			if !reflect.DeepEqual(c.order, tc.seen) {
				t.Errorf("seen = %q, want %q", c.order, tc.seen)
			}
			if c.failed != tc.failed || c.linux != tc.linux || c.allSeen() != tc.all {
				t.Errorf("failed=%q linux=%v all=%v, want %q %v %v", c.failed, c.linux, c.allSeen(), tc.failed, tc.linux, tc.all)
			}
		})
	}
}

func TestConsoleLongLineIsBounded(t *testing.T) {
	c := newConsole(nil, nil, nil)
	chunk := []byte(strings.Repeat("x", 1024))
	for i := 0; i < 200; i++ {
		c.feed(chunk)
	}
	if len(c.partial) > maxPartial {
		t.Errorf("pending line grew to %d bytes", len(c.partial))
	}
}

func TestBuildArgs(t *testing.T) {
	tests := []struct {
		name        string
		opts        Options
		contains    []string
		notContains []string
	}{
		{
			name:     "uefi snapshot",
			opts:     Options{Disk: "/d/disk.raw", Firmware: UEFI},
			contains: []string{"q35,accel=tcg", "-snapshot", "-no-reboot", "file=/d/disk.raw,format=raw,if=virtio,cache=unsafe", "if=pflash,format=raw,unit=0,readonly=on,file=" + DefaultOVMFCode, "if=pflash,format=raw,unit=1,file=/w/vars.fd"},
		},
		{
			name:        "bios writable",
			opts:        Options{Disk: "/d/disk.raw", Firmware: BIOS, Writable: true, ExtraArgs: []string{"-S"}},
			contains:    []string{"q35,accel=tcg", "-S"},
			notContains: []string{"-snapshot", "pflash"},
		},
		{
			name:     "comma in path is escaped",
			opts:     Options{Disk: "/d/a,b.raw", Firmware: BIOS},
			contains: []string{"file=/d/a,,b.raw,format=raw"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.setDefaults()
			joined := strings.Join(buildArgs(&tc.opts, "/w/vars.fd"), " ")
			for _, s := range tc.contains {
				if !strings.Contains(joined, s) {
					t.Errorf("args %q lack %q", joined, s)
				}
			}
			for _, s := range tc.notContains {
				if strings.Contains(joined, s) {
					t.Errorf("args %q contain %q", joined, s)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	disk := t.TempDir() + "/disk.raw"
	if err := writeFile(disk, make([]byte, 512)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no disk", Options{}, "no disk image"},
		{"missing disk", Options{Disk: "/nonexistent.raw"}, "no such file"},
		{"bad firmware", Options{Disk: disk, Firmware: "coreboot"}, "unknown firmware"},
		{"missing OVMF", Options{Disk: disk, OVMFCode: "/nonexistent/CODE.fd"}, "apt-get install ovmf"},
		{"missing qemu", Options{Disk: disk, Binary: "/nonexistent/qemu"}, "qemu-system-x86"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.setDefaults()
			err := tc.opts.validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("validate = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func TestKernelFault(t *testing.T) {
	for _, tc := range []struct {
		name, log string
		want      bool
	}{
		{"oops during kernel init (TCG text patching)", "[ 4.76] IPI shorthand broadcast: enabled\n[ 4.78] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n[ 4.79] Kernel panic - not syncing: Fatal exception in interrupt\n", true},
		{"general protection fault before init", "[ 2.0] general protection fault, probably for non-canonical address\n[ 2.1] Kernel panic - not syncing: Fatal exception\n", true},
		{"no root filesystem", "[ 3.0] VFS: Cannot open root device\n[ 3.1] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n", false},
		{"init died", "[ 3.0] Run /init as init process\n[ 3.5] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\n", false},
		{"oops after userspace started", "[ 2.9] Freeing unused kernel image (initmem) memory: 2000K\n[ 3.0] Run /init as init process\n[ 9.0] Oops: 0002 [#1] SMP\n[ 9.1] Kernel panic - not syncing: Fatal exception\n", false},
		{"grub rescue", "error: unknown filesystem.\ngrub rescue> ", false},
		{"nothing", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := kernelFault(tc.log); got != tc.want {
				t.Errorf("kernelFault = %v, want %v", got, tc.want)
			}
		})
	}
}
