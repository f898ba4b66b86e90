package qemu

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func writeFile(path string, data []byte) error { return os.WriteFile(path, data, 0o644) }

// biosDisk writes a 1 MiB disk whose MBR boot code prints msg on COM1 and
// then, if poweroff is set, turns the q35 machine off through the ACPI PM1a
// control port (0x604, where SeaBIOS places it), else halts forever.
func biosDisk(t *testing.T, msg string, poweroff bool) string {
	t.Helper()
	code := []byte{
		0xFC,       // cld
		0xFA,       // cli
		0x31, 0xC0, // xor ax, ax
		0x8E, 0xD8, // mov ds, ax
		0xBE, 0x1E, 0x7C, // mov si, 0x7C1E (the message below)
		0xBA, 0xF8, 0x03, // mov dx, 0x3F8 (COM1 data port)
		0xAC,       // next: lodsb
		0x84, 0xC0, // test al, al
		0x74, 0x03, // jz done
		0xEE,       // out dx, al
		0xEB, 0xF8, // jmp next
		0xBA, 0x04, 0x06, // done: mov dx, 0x604
		0xB8, 0x00, 0x20, // mov ax, 0x2000 (SLP_EN, S5)
		0xEF,       // out dx, ax
		0xF4,       // halt: hlt
		0xEB, 0xFD, // jmp halt
	}
	if len(code) != 0x1E {
		t.Fatalf("boot code is %d bytes, the message offset assumes 0x1E", len(code))
	}
	if !poweroff {
		code[26] = 0x90 // nop instead of the port write
	}
	sector := append(code, append([]byte(msg), 0)...)
	if len(sector) > 510 {
		t.Fatalf("message too long")
	}
	disk := make([]byte, 1<<20)
	copy(disk, sector)
	disk[510], disk[511] = 0x55, 0xAA
	path := filepath.Join(t.TempDir(), "bios.raw")
	if err := writeFile(path, disk); err != nil {
		t.Fatal(err)
	}
	return path
}

// efiDisk writes a GPT disk with an ESP holding a GRUB image (built by the
// host's grub-mkimage) whose embedded config is cfg. No mount is needed:
// sfdisk works on the file and mtools writes the FAT file system.
func efiDisk(t *testing.T, cfg string) string {
	t.Helper()
	for _, tool := range []string{"grub-mkimage", "sfdisk", "mformat", "mmd", "mcopy"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed to build the test disk: %v (apt-get install grub-efi-amd64-bin fdisk mtools)", tool, err)
		}
	}
	dir := t.TempDir()
	run := func(stdin string, name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Stdin = strings.NewReader(stdin)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	cfgPath := filepath.Join(dir, "early.cfg")
	if err := writeFile(cfgPath, []byte(cfg)); err != nil {
		t.Fatal(err)
	}
	efi := filepath.Join(dir, "BOOTX64.EFI")
	run("", "grub-mkimage", "-O", "x86_64-efi", "-d", "/usr/lib/grub/x86_64-efi", "-o", efi,
		"-p", "/EFI/BOOT", "-c", cfgPath, "serial", "terminal", "echo", "halt", "sleep")
	disk := filepath.Join(dir, "efi.raw")
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(34 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	run("label: gpt\nstart=2048, size=65536, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n", "sfdisk", "-q", disk)
	img := disk + "@@1M"
	run("", "mformat", "-i", img, "-T", "65536", "-v", "ESP", "::")
	run("", "mmd", "-i", img, "::/EFI", "::/EFI/BOOT")
	run("", "mcopy", "-i", img, efi, "::/EFI/BOOT/BOOTX64.EFI")
	return disk
}

const grubSerial = "serial --unit=0 --speed=115200\nterminal_output serial\n"

func assertGone(t *testing.T, res *Result) {
	t.Helper()
	if res == nil {
		return
	}
	if err := syscall.Kill(res.PID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("QEMU pid %d still exists after Boot returned (kill 0: %v)", res.PID, err)
	}
}

func TestBootSuccess(t *testing.T) {
	tests := []struct {
		name       string
		opts       func(t *testing.T) Options
		seen       []string
		poweredOff bool
		maxTime    time.Duration
	}{
		{
			name: "bios marker then poweroff",
			opts: func(t *testing.T) Options {
				return Options{Disk: biosDisk(t, "TESTBED-BIOS-OK\r\n", true), Firmware: BIOS, Markers: []string{"TESTBED-BIOS-OK"}}
			},
			seen: []string{"TESTBED-BIOS-OK"}, poweredOff: true, maxTime: 30 * time.Second,
		},
		{
			name: "bios marker, guest never powers off",
			opts: func(t *testing.T) Options {
				return Options{Disk: biosDisk(t, "TESTBED-BIOS-OK\r\n", false), Firmware: BIOS, Markers: []string{"TESTBED-BIOS-OK"}, PoweroffWait: time.Second}
			},
			seen: []string{"TESTBED-BIOS-OK"}, poweredOff: false, maxTime: 30 * time.Second,
		},
		{
			name: "bios without markers succeeds on poweroff",
			opts: func(t *testing.T) Options {
				return Options{Disk: biosDisk(t, "bye\r\n", true), Firmware: BIOS}
			},
			poweredOff: true, maxTime: 30 * time.Second,
		},
		{
			name: "uefi grub markers",
			opts: func(t *testing.T) Options {
				cfg := grubSerial + "echo \"TESTBED-GRUB-OK platform=${grub_platform}\"\necho TESTBED-SECOND\nhalt\n"
				return Options{Disk: efiDisk(t, cfg), Firmware: UEFI, Markers: []string{"TESTBED-GRUB-OK platform=efi", "TESTBED-SECOND"}}
			},
			seen: []string{"TESTBED-GRUB-OK platform=efi", "TESTBED-SECOND"}, poweredOff: true, maxTime: 60 * time.Second,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts(t)
			opts.LogPath = filepath.Join(t.TempDir(), "console.log")
			res, err := Boot(context.Background(), opts)
			assertGone(t, res)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("booted in %v, exit %d", res.Duration, res.ExitCode)
			if strings.Join(res.Seen, "|") != strings.Join(tc.seen, "|") {
				t.Errorf("seen %q, want %q", res.Seen, tc.seen)
			}
			if res.PoweredOff != tc.poweredOff {
				t.Errorf("PoweredOff = %v, want %v", res.PoweredOff, tc.poweredOff)
			}
			if res.Duration > tc.maxTime {
				t.Errorf("took %v, want under %v", res.Duration, tc.maxTime)
			}
			logged, err := os.ReadFile(opts.LogPath)
			if err != nil {
				t.Fatal(err)
			}
			if string(logged) != res.Log {
				t.Errorf("log file %q differs from Result.Log %q", logged, res.Log)
			}
			if strings.ContainsAny(res.Log, "\r\x1b") {
				t.Errorf("log still has CR or escapes: %q", res.Log)
			}
		})
	}
}

func TestBootFailure(t *testing.T) {
	tests := []struct {
		name    string
		opts    func(t *testing.T) Options
		cancel  time.Duration // cancel ctx after this, if set
		reason  string
		is      error
		maxTime time.Duration
	}{
		{
			name: "uefi disk without OS fails fast",
			opts: func(t *testing.T) Options {
				return Options{Disk: biosDisk(t, "", false), Firmware: UEFI, Markers: []string{"NEVER"}, EarlyDeadline: 8 * time.Second}
			},
			reason: `no "Linux version" on the console within 8s`, maxTime: 20 * time.Second,
		},
		{
			name: "fail pattern ends the boot",
			opts: func(t *testing.T) Options {
				cfg := grubSerial + "echo \"[ 1.0] Kernel panic - not syncing: testbed\"\nsleep 600\n"
				return Options{Disk: efiDisk(t, cfg), Firmware: UEFI, Markers: []string{"NEVER"}}
			},
			reason: `fail pattern "Kernel panic"`, maxTime: 60 * time.Second,
		},
		{
			name: "overall timeout",
			opts: func(t *testing.T) Options {
				return Options{Disk: biosDisk(t, "", false), Firmware: BIOS, Markers: []string{"NEVER"}, Timeout: 2 * time.Second, EarlyDeadline: -1}
			},
			reason: "timeout after 2s", maxTime: 10 * time.Second,
		},
		{
			name: "context cancelled",
			opts: func(t *testing.T) Options {
				return Options{Disk: biosDisk(t, "", false), Firmware: BIOS, Markers: []string{"NEVER"}}
			},
			cancel: 2 * time.Second, reason: "cancelled", is: context.Canceled, maxTime: 10 * time.Second,
		},
		{
			name: "guest powers off before the marker",
			opts: func(t *testing.T) Options {
				return Options{Disk: biosDisk(t, "something else\r\n", true), Firmware: BIOS, Markers: []string{"NEVER"}}
			},
			reason: `before markers ["NEVER"] appeared`, maxTime: 30 * time.Second,
		},
		{
			name: "qemu rejects its arguments",
			opts: func(t *testing.T) Options {
				return Options{Disk: biosDisk(t, "", false), Firmware: BIOS, ExtraArgs: []string{"-no-such-option"}}
			},
			reason: "qemu exited with exit status 1", maxTime: 10 * time.Second,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancel > 0 {
				time.AfterFunc(tc.cancel, cancel)
			}
			start := time.Now()
			res, err := Boot(ctx, tc.opts(t))
			elapsed := time.Since(start)
			assertGone(t, res)
			var be *BootError
			if !errors.As(err, &be) {
				t.Fatalf("err = %v, want a *BootError", err)
			}
			t.Logf("failed after %v: %s", elapsed, strings.SplitN(err.Error(), "\n", 2)[0])
			if !strings.Contains(be.Reason, tc.reason) {
				t.Errorf("reason %q, want it to contain %q\n%v", be.Reason, tc.reason, err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("err does not wrap %v", tc.is)
			}
			if res == nil || be.Result != res {
				t.Errorf("the Result must be returned with the error")
			}
			if elapsed > tc.maxTime {
				t.Errorf("took %v, want under %v", elapsed, tc.maxTime)
			}
		})
	}
}

func TestBootErrorCarriesLogTail(t *testing.T) {
	var lines []string
	for i := 0; i < 100; i++ {
		lines = append(lines, "line "+string(rune('a'+i%26)))
	}
	err := &BootError{Disk: "d.raw", Reason: "timeout", Result: &Result{Log: strings.Join(lines, "\n") + "\n"}}
	msg := err.Error()
	if got := strings.Count(msg, "\nline "); got != 60 {
		t.Errorf("error shows %d console lines, want 60", got)
	}
}

func TestBootWaitsForLock(t *testing.T) {
	lockPath := filepath.Join(t.TempDir(), "qemu.lock")
	unlock, err := lock(context.Background(), lockPath)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	res, err := Boot(ctx, Options{Disk: biosDisk(t, "TESTBED-BIOS-OK\r\n", true), Firmware: BIOS, LockPath: lockPath})
	if err == nil || !strings.Contains(err.Error(), "waiting for another boot") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Boot with the lock held elsewhere: res=%v err=%v", res, err)
	}
	if res != nil {
		t.Errorf("QEMU must not start while another boot holds the lock")
	}
	unlock()
	res, err = Boot(context.Background(), Options{Disk: biosDisk(t, "TESTBED-BIOS-OK\r\n", true), Firmware: BIOS, LockPath: lockPath, Markers: []string{"TESTBED-BIOS-OK"}})
	assertGone(t, res)
	if err != nil {
		t.Fatalf("Boot after the lock was released: %v", err)
	}
}
