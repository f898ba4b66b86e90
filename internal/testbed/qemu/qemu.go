// Package qemu boots a raw disk image in QEMU (TCG) under OVMF or SeaBIOS,
// follows the serial console, and stops at success markers, failure
// patterns or deadlines. It never leaves a QEMU process behind, and it runs
// one VM at a time per machine, because a TCG guest with two vCPUs uses
// both host cores.
package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Firmware selects the guest firmware.
type Firmware string

const (
	UEFI Firmware = "uefi" // OVMF, with a fresh copy of the variable store per boot
	BIOS Firmware = "bios" // SeaBIOS, QEMU's default firmware
)

// Defaults used when the corresponding Options field is zero.
const (
	DefaultTimeout       = 10 * time.Minute
	DefaultEarlyDeadline = 180 * time.Second
	DefaultPoweroffWait  = 60 * time.Second
	DefaultMemoryMB      = 1024
	DefaultCPUs          = 2
	DefaultOVMFCode      = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	DefaultOVMFVars      = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	DefaultBinary        = "qemu-system-x86_64"
)

// DefaultFailPatterns are console texts after which a boot cannot succeed.
var DefaultFailPatterns = []string{
	"Kernel panic",
	"grub rescue>",
	"end Kernel panic",
	"Failed to execute /init",
	"emergency mode",
}

// Options describe one boot.
type Options struct {
	Disk     string   // raw disk image (required)
	Firmware Firmware // UEFI (default) or BIOS

	// Timeout bounds the whole boot (default DefaultTimeout).
	Timeout time.Duration
	// Markers must all appear on the console for success. Without markers
	// the boot succeeds when the guest powers off (exit status 0) without a
	// fail pattern.
	Markers []string
	// FailPatterns end the boot as failed (default DefaultFailPatterns).
	FailPatterns []string
	// EarlyDeadline fails the boot when no "Linux version" line appeared
	// within it (default DefaultEarlyDeadline; negative disables). OVMF
	// otherwise sits in its boot menu forever on an unbootable disk.
	EarlyDeadline time.Duration
	// PoweroffWait is how long QEMU may take to exit by itself after the
	// last marker before it is killed (default DefaultPoweroffWait).
	PoweroffWait time.Duration

	MemoryMB int // default DefaultMemoryMB
	CPUs     int // default DefaultCPUs
	// Writable lets the guest's writes reach Disk. By default QEMU runs
	// with -snapshot and the disk is left unchanged.
	Writable bool

	// LogPath receives the cleaned console log (optional).
	LogPath string
	// Console receives cleaned console lines as they arrive (optional).
	Console io.Writer
	// ExtraArgs are appended to the QEMU command line.
	ExtraArgs []string

	// Binary, OVMFCode, OVMFVars and LockPath override the defaults
	// (DefaultBinary, DefaultOVMFCode, DefaultOVMFVars, DefaultLockPath()).
	Binary, OVMFCode, OVMFVars, LockPath string
}

// Result describes a finished boot; Boot returns it on failure too.
type Result struct {
	Log        string        // cleaned console log
	Duration   time.Duration // from QEMU start to its exit
	Seen       []string      // markers, in the order they appeared
	PoweredOff bool          // QEMU exited by itself (guest poweroff or halt)
	ExitCode   int           // QEMU's exit status; -1 when it was killed
	PID        int           // QEMU's process id (gone when Boot returns)
	Args       []string      // the QEMU command line
	// Retried is set when this is a second boot, after the first one's
	// guest kernel faulted before userspace (see Boot).
	Retried bool
}

// BootError is returned when a boot does not succeed.
type BootError struct {
	Disk   string
	Reason string
	Result *Result
	Stderr string // QEMU's own error output
	Err    error  // underlying cause, e.g. context.Canceled
}

func (e *BootError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "booting %s: %s", e.Disk, e.Reason)
	if e.Result != nil {
		fmt.Fprintf(&b, " (after %.1fs)", e.Result.Duration.Seconds())
	}
	if s := strings.TrimSpace(e.Stderr); s != "" {
		fmt.Fprintf(&b, "\nqemu stderr:\n%s", tailLines(s, 10))
	}
	if e.Result != nil && e.Result.Log != "" {
		fmt.Fprintf(&b, "\n--- last console lines ---\n%s", tailLines(e.Result.Log, 60))
	}
	return b.String()
}

func (e *BootError) Unwrap() error { return e.Err }

// DefaultLockPath is the machine-wide lock that serializes boots.
func DefaultLockPath() string {
	return filepath.Join(os.TempDir(), "bootlace-qemu.lock")
}

func (o *Options) setDefaults() {
	if o.Firmware == "" {
		o.Firmware = UEFI
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.FailPatterns == nil {
		o.FailPatterns = DefaultFailPatterns
	}
	if o.EarlyDeadline == 0 {
		o.EarlyDeadline = DefaultEarlyDeadline
	}
	if o.PoweroffWait <= 0 {
		o.PoweroffWait = DefaultPoweroffWait
	}
	if o.MemoryMB <= 0 {
		o.MemoryMB = DefaultMemoryMB
	}
	if o.CPUs <= 0 {
		o.CPUs = DefaultCPUs
	}
	if o.Binary == "" {
		o.Binary = DefaultBinary
	}
	if o.OVMFCode == "" {
		o.OVMFCode = DefaultOVMFCode
	}
	if o.OVMFVars == "" {
		o.OVMFVars = DefaultOVMFVars
	}
	if o.LockPath == "" {
		o.LockPath = DefaultLockPath()
	}
}

func (o *Options) validate() error {
	if o.Disk == "" {
		return errors.New("qemu boot: no disk image given")
	}
	if _, err := os.Stat(o.Disk); err != nil {
		return fmt.Errorf("qemu boot: disk image: %w", err)
	}
	switch o.Firmware {
	case UEFI:
		for _, f := range []string{o.OVMFCode, o.OVMFVars} {
			if _, err := os.Stat(f); err != nil {
				return fmt.Errorf("qemu boot: OVMF firmware: %w (apt-get install ovmf)", err)
			}
		}
	case BIOS:
	default:
		return fmt.Errorf("qemu boot: unknown firmware %q (want %q or %q)", o.Firmware, UEFI, BIOS)
	}
	if _, err := exec.LookPath(o.Binary); err != nil {
		return fmt.Errorf("qemu boot: %w (apt-get install qemu-system-x86)", err)
	}
	return nil
}

// qemuPath escapes a file name for a QEMU option value, where ',' separates
// options and is written as ",,".
func qemuPath(p string) string { return strings.ReplaceAll(p, ",", ",,") }

// buildArgs returns QEMU's arguments. Serial output goes to stdout, which
// Boot reads through a pipe; KVM is not usable on the test machines, so TCG.
func buildArgs(o *Options, varsCopy string) []string {
	args := []string{
		"-machine", "q35,accel=tcg", "-cpu", "max",
		"-m", fmt.Sprint(o.MemoryMB), "-smp", fmt.Sprint(o.CPUs),
		"-display", "none", "-monitor", "none", "-nic", "none", "-no-reboot",
		"-serial", "stdio",
		"-drive", "file=" + qemuPath(o.Disk) + ",format=raw,if=virtio,cache=unsafe",
	}
	if !o.Writable {
		args = append(args, "-snapshot")
	}
	if o.Firmware == UEFI {
		args = append(args,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+qemuPath(o.OVMFCode),
			"-drive", "if=pflash,format=raw,unit=1,file="+qemuPath(varsCopy))
	}
	return append(args, o.ExtraArgs...)
}

// Boot boots opts.Disk and watches its console until every marker was seen
// (then QEMU gets PoweroffWait to exit by itself), a fail pattern appears,
// a deadline passes, or ctx is cancelled. It waits for the machine-wide
// boot lock first. A boot whose guest kernel faults before it starts
// userspace is retried once (Result.Retried), since that is the emulator's
// fault, not the disk's. On failure it returns a *BootError and, once QEMU
// was started, the Result as well.
func Boot(ctx context.Context, opts Options) (*Result, error) {
	opts.setDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	unlock, err := lock(ctx, opts.LockPath)
	if err != nil {
		return nil, err
	}
	defer unlock()

	work, err := os.MkdirTemp("", "bootlace-qemu-")
	if err != nil {
		return nil, fmt.Errorf("qemu boot: creating work dir: %w", err)
	}
	defer os.RemoveAll(work)
	varsCopy := filepath.Join(work, "OVMF_VARS.fd")
	if opts.Firmware == UEFI {
		// A fresh variable store, so boot entries of earlier boots never
		// change what the firmware tries first.
		if err := copyFile(opts.OVMFVars, varsCopy); err != nil {
			return nil, err
		}
	}

	var logFile *os.File
	if opts.LogPath != "" {
		if logFile, err = os.Create(opts.LogPath); err != nil {
			return nil, fmt.Errorf("qemu boot: creating console log: %w", err)
		}
		defer logFile.Close()
	}
	var sink io.Writer
	switch {
	case logFile != nil && opts.Console != nil:
		sink = io.MultiWriter(logFile, opts.Console)
	case logFile != nil:
		sink = logFile
	case opts.Console != nil:
		sink = opts.Console
	}

	res, err := run(ctx, &opts, buildArgs(&opts, varsCopy), newConsole(opts.Markers, opts.FailPatterns, sink))
	if err == nil || res == nil || ctx.Err() != nil || !kernelFault(res.Log) {
		return res, err
	}
	// The guest kernel faulted in its own initialization, before it ran
	// anything from the disk's root or initramfs. Under TCG this happens
	// now and then (e.g. an int3 while the kernel patches its own code on
	// another vCPU); it says nothing about the disk, so boot once more.
	if sink != nil {
		fmt.Fprintf(sink, "=== testbed: the guest kernel faulted before userspace (an emulation fault, not the disk): booting once more ===\n")
	}
	if opts.Firmware == UEFI {
		if err := copyFile(opts.OVMFVars, varsCopy); err != nil {
			return nil, err
		}
	}
	res, err = run(ctx, &opts, buildArgs(&opts, varsCopy), newConsole(opts.Markers, opts.FailPatterns, sink))
	if res != nil {
		res.Retried = true
	}
	var be *BootError
	if errors.As(err, &be) {
		be.Reason += " (second boot: the first one's kernel faulted before userspace)"
	}
	return res, err
}

// kernelFaults are the kernel's own reports of a CPU exception in kernel
// code, as opposed to a panic over configuration (no root, no init).
var kernelFaults = []string{"Oops:", "general protection fault", "BUG: unable to handle", "invalid opcode:"}

// userspaceStart marks the kernel handing over to the initramfs or root.
var userspaceStart = []string{"Run /init as init process", "Freeing unused kernel image"}

// kernelFault reports whether the console shows the guest kernel faulting
// before it started any program of the disk.
func kernelFault(log string) bool {
	at := -1
	for _, f := range kernelFaults {
		if i := strings.Index(log, f); i >= 0 && (at < 0 || i < at) {
			at = i
		}
	}
	if at < 0 {
		return false
	}
	for _, u := range userspaceStart {
		if i := strings.Index(log, u); i >= 0 && i < at {
			return false
		}
	}
	return true
}

// limitedBuffer keeps the first 64 KiB written to it.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := 64<<10 - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func run(ctx context.Context, opts *Options, args []string, con *console) (*Result, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("qemu boot: creating pipe: %w", err)
	}
	defer pr.Close()
	var stderr limitedBuffer
	cmd := exec.Command(opts.Binary, args...)
	cmd.Stdout = pw // an *os.File: QEMU writes into the pipe directly
	cmd.Stderr = &stderr
	// Own process group: the kill reaches everything QEMU may start, and a
	// terminal's Ctrl-C goes to the caller, which then cancels ctx.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		pw.Close()
		return nil, fmt.Errorf("qemu boot: starting %s: %w", opts.Binary, err)
	}
	pw.Close() // QEMU holds the only write end now, so EOF means it is gone
	res := &Result{PID: cmd.Process.Pid, Args: append([]string{opts.Binary}, args...), ExitCode: -1}

	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	chunks := make(chan []byte)
	quit := make(chan struct{})
	defer close(quit)
	go readChunks(pr, chunks, quit)

	overall := time.NewTimer(opts.Timeout)
	defer overall.Stop()
	var early <-chan time.Time
	if opts.EarlyDeadline > 0 {
		t := time.NewTimer(opts.EarlyDeadline)
		defer t.Stop()
		early = t.C
	}
	var poweroff <-chan time.Time

	var reason string // set when the boot failed
	var cause error
	hasExited, graceOver := false, false
loop:
	for {
		select {
		case chunk, ok := <-chunks:
			if !ok {
				chunks = nil
				continue
			}
			con.feed(chunk)
			if poweroff != nil {
				continue // markers done: only waiting for the exit
			}
			if con.failed != "" {
				reason = fmt.Sprintf("fail pattern %q on the console: %q", con.failed, con.failAt)
				break loop
			}
			if con.allSeen() {
				t := time.NewTimer(opts.PoweroffWait)
				defer t.Stop()
				poweroff = t.C
			}
		case <-exited:
			hasExited = true
			break loop
		case <-early:
			if !con.linux && poweroff == nil {
				reason = fmt.Sprintf("no %q on the console within %v", linuxBanner, opts.EarlyDeadline)
				break loop
			}
		case <-overall.C:
			reason = fmt.Sprintf("timeout after %v", opts.Timeout)
			break loop
		case <-ctx.Done():
			reason, cause = "cancelled", ctx.Err()
			break loop
		case <-poweroff:
			graceOver = true
			break loop
		}
	}

	if !hasExited {
		terminate(res.PID, exited)
	}
	res.Duration = time.Since(start)
	// QEMU is gone, so the pipe reaches EOF once its buffer is drained.
	for chunks != nil {
		chunk, ok := <-chunks
		if !ok {
			break
		}
		con.feed(chunk)
	}
	con.flush()
	res.Log, res.Seen = con.log.String(), append([]string(nil), con.order...)
	res.ExitCode = cmd.ProcessState.ExitCode()
	res.PoweredOff = hasExited

	fail := func(reason string, cause error) (*Result, error) {
		return res, &BootError{Disk: opts.Disk, Reason: reason, Result: res, Stderr: stderr.String(), Err: cause}
	}
	switch {
	case reason != "":
		return fail(reason, cause)
	case graceOver:
		return res, nil // markers seen; the guest just did not power off
	case con.allSeen() && (con.failed == "" || poweroff != nil):
		return res, nil
	case con.failed != "":
		return fail(fmt.Sprintf("fail pattern %q on the console: %q", con.failed, con.failAt), nil)
	case len(con.markers) == 0 && res.ExitCode == 0:
		return res, nil
	case len(con.markers) == 0:
		return fail(fmt.Sprintf("qemu exited with %v", waitErr), waitErr)
	default:
		return fail(fmt.Sprintf("qemu exited (%v) before markers %q appeared", exitText(waitErr), con.missing()), waitErr)
	}
}

func exitText(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}

// readChunks copies the console pipe into chunks until EOF or quit.
func readChunks(r io.Reader, chunks chan<- []byte, quit <-chan struct{}) {
	defer close(chunks)
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			select {
			case chunks <- append([]byte(nil), buf[:n]...):
			case <-quit:
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// terminate stops QEMU's process group: SIGTERM first (QEMU exits cleanly
// and flushes a writable disk), SIGKILL if it does not go within 5 s. It
// returns once the process has been reaped.
func terminate(pgid int, exited <-chan struct{}) {
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-exited
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL) // stragglers in the group, if any
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("qemu boot: reading %s: %w", src, err)
	}
	if err := os.WriteFile(dst, data, 0o600); err != nil {
		return fmt.Errorf("qemu boot: writing %s: %w", dst, err)
	}
	return nil
}
