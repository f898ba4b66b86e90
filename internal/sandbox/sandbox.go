// Package sandbox runs the target image's own tools with the image tree as
// their root, in fresh mount, PID, IPC, UTS and network namespaces, so that
// image code never runs against the host's root and host tools never touch
// the target.
//
// The sandbox needs root (CAP_SYS_ADMIN; a privileged container when
// bootlace runs in one) and Linux 5.12 or later (open_tree, move_mount,
// mount_setattr). Go cannot fork a configured child, so Run re-executes the
// current binary as a helper; every program that uses Run must call Init
// first thing in main (and in TestMain for tests).
//
// Inside: the image's top-level directories and files bound read-only (from
// detached clones, so the host's mounts and the tree are untouched),
// /usr/etc at /etc when the image has no /etc, a fresh /proc, the host's
// /sys read-only (its /sys/class/net still lists the host's interfaces), a
// minimal /dev or the host's, tmpfs on /run, /tmp and /var/tmp (when the
// image has that directory), the binds, host name Hostname, and a network
// namespace with only lo (down). The root tmpfs is read-only once built.
//
// Pdeathsig is tied to the OS thread that started the helper: do not call
// Run from a goroutine that locks its thread and then exits.
package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"strings"
	"syscall"
	"time"
)

// Bind makes a host path visible inside the sandbox.
type Bind struct {
	Source string // host path
	Target string // absolute path inside the sandbox
	// ReadOnly makes the bind (and with Recursive, every mount below it)
	// read-only inside the sandbox only.
	ReadOnly bool
	// Recursive also binds the mounts below Source.
	Recursive bool
}

// Spec describes one sandboxed command.
type Spec struct {
	// Root is the host path of the image tree (a staged image or an ostree
	// deployment). It is never modified: its top-level entries are bound
	// read-only onto a fresh tmpfs.
	Root string
	// Args is argv; Args[0] is looked up in the image with the PATH of Env.
	Args []string
	// Env is the whole environment of the command (the host's is never
	// passed); nil means DefaultEnv().
	Env []string
	// Dir is the working directory inside the sandbox; "" means "/".
	Dir string
	// Binds are applied in order after the root is built. A target that does
	// not exist is created if its parent lies on the sandbox's own tmpfs
	// (/, /run, /tmp, /dev, or a directory created for an earlier bind); it
	// cannot be created inside a read-only image directory.
	Binds  []Bind
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Devices binds the host's /dev (needed for mkfs on a block device);
	// otherwise /dev holds only null, zero, full, random, urandom, tty, a
	// private devpts and /dev/shm.
	Devices bool
}

// DefaultPath is the PATH of the default environment.
const DefaultPath = "/usr/sbin:/usr/bin:/sbin:/bin"

// DefaultEnv returns the environment used when Spec.Env is nil.
func DefaultEnv() []string {
	return []string{"PATH=" + DefaultPath, "LANG=C.UTF-8"}
}

// Hostname is the host name inside the sandbox.
const Hostname = "bootlace-sandbox"

// ExitError reports a command that ran and failed.
type ExitError struct {
	Command string // the command line, shortened
	Root    string
	Code    int            // exit status, or -1 when killed by a signal
	Signal  syscall.Signal // the signal that killed it, if any
	Stderr  string         // the last lines of standard error
}

func (e *ExitError) Error() string {
	var how string
	if e.Signal != 0 {
		how = "was killed by signal " + e.Signal.String()
	} else {
		how = fmt.Sprintf("exited with status %d", e.Code)
	}
	msg := fmt.Sprintf("%s (run from the image at %s) %s", e.Command, e.Root, how)
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

// Output is Run with standard output collected and returned.
func Output(ctx context.Context, spec Spec) ([]byte, error) {
	if spec.Stdout != nil {
		return nil, errors.New("sandbox: Output with Stdout already set")
	}
	var out bytes.Buffer
	spec.Stdout = &out
	err := Run(ctx, spec)
	return out.Bytes(), err
}

// Run runs spec.Args in the sandbox and waits for it. Cancelling ctx kills
// the whole sandbox: the helper is PID 1 of its PID namespace, so the kernel
// kills every process in it when the helper dies. If bootlace itself dies
// the helper gets SIGKILL (Pdeathsig). The mounts exist only in the
// sandbox's mount namespace and vanish with it.
func Run(ctx context.Context, spec Spec) error {
	hs, err := prepare(spec)
	if err != nil {
		return err
	}
	cmdline := shortCommand(spec.Args)

	specR, specW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("sandbox for %s: %w", cmdline, err)
	}
	defer specR.Close()
	defer specW.Close()
	statR, statW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("sandbox for %s: %w", cmdline, err)
	}
	defer statR.Close()
	defer statW.Close()

	tail := &tailBuffer{max: 8 << 10}
	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Args = []string{"bootlace-sandbox"}
	cmd.Env = []string{helperEnv + "=1"}
	cmd.Dir = "/"
	cmd.ExtraFiles = []*os.File{specR, statW} // fds 3 and 4 in the helper
	cmd.Stdin = spec.Stdin
	cmd.Stdout = spec.Stdout
	if spec.Stderr != nil {
		cmd.Stderr = io.MultiWriter(tail, spec.Stderr)
	} else {
		cmd.Stderr = tail
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC |
			syscall.CLONE_NEWUTS | syscall.CLONE_NEWNET,
		Pdeathsig: syscall.SIGKILL,
	}
	// A Stdin reader that never returns must not hang Wait after the
	// sandbox is gone.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting sandbox for %s: %w", cmdline, err)
	}
	specR.Close()
	statW.Close()

	statusc := make(chan helperStatus, 1)
	go func() {
		var st helperStatus
		if b, err := io.ReadAll(statR); err == nil && len(b) > 0 {
			if json.Unmarshal(b, &st) != nil {
				st = helperStatus{}
			}
			st.valid = st.Err != "" || st.Exited
		}
		statusc <- st
	}()
	// A write error means the helper died early; Wait reports why.
	_ = json.NewEncoder(specW).Encode(hs)
	specW.Close()

	waitErr := cmd.Wait()
	st := <-statusc
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("running %s in the image at %s: %w", cmdline, spec.Root, ctx.Err())
	case st.valid && st.Err != "":
		return fmt.Errorf("sandbox for %s (image at %s): %s", cmdline, spec.Root, st.Err)
	case st.valid && (st.Code != 0 || st.Signal != 0):
		ee := &ExitError{Command: cmdline, Root: spec.Root, Code: st.Code, Signal: syscall.Signal(st.Signal), Stderr: tail.lastLines(10)}
		if st.Signal != 0 {
			ee.Code = -1
		}
		return ee
	case st.valid:
		return nil
	case waitErr != nil:
		return fmt.Errorf("sandbox helper for %s failed: %w; %s", cmdline, waitErr, tail.lastLines(10))
	default:
		return fmt.Errorf("sandbox helper for %s exited without a status; %s", cmdline, tail.lastLines(10))
	}
}

// prepare checks spec and turns it into what the helper needs.
func prepare(spec Spec) (helperSpec, error) {
	if len(spec.Args) == 0 || spec.Args[0] == "" {
		return helperSpec{}, errors.New("sandbox: no command given")
	}
	if !path.IsAbs(spec.Root) {
		return helperSpec{}, fmt.Errorf("sandbox: image root %q is not an absolute path", spec.Root)
	}
	if fi, err := os.Stat(spec.Root); err != nil {
		return helperSpec{}, fmt.Errorf("sandbox: image root: %w", err)
	} else if !fi.IsDir() {
		return helperSpec{}, fmt.Errorf("sandbox: image root %s is not a directory", spec.Root)
	}
	env := spec.Env
	if env == nil {
		env = DefaultEnv()
	}
	dir := spec.Dir
	if dir == "" {
		dir = "/"
	}
	if !path.IsAbs(dir) {
		return helperSpec{}, fmt.Errorf("sandbox: working directory %q is not absolute", dir)
	}
	for _, b := range spec.Binds {
		if !path.IsAbs(b.Source) || !path.IsAbs(b.Target) {
			return helperSpec{}, fmt.Errorf("sandbox: bind %q -> %q: both paths must be absolute", b.Source, b.Target)
		}
		if path.Clean(b.Target) == "/" {
			return helperSpec{}, fmt.Errorf("sandbox: bind %q -> /: use Root for the sandbox's root", b.Source)
		}
		if _, err := os.Stat(b.Source); err != nil {
			return helperSpec{}, fmt.Errorf("sandbox: bind source: %w", err)
		}
	}
	exe, err := LookPath(spec.Root, spec.Args[0], envPath(env), dir)
	if err != nil {
		return helperSpec{}, err
	}
	return helperSpec{
		Root:    spec.Root,
		Path:    exe,
		Args:    spec.Args,
		Env:     env,
		Dir:     dir,
		Binds:   spec.Binds,
		Devices: spec.Devices,
	}, nil
}

// envPath returns the PATH of env, or the default one when unset, as a
// shell would search it.
func envPath(env []string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], "PATH="); ok {
			return v
		}
	}
	return DefaultPath
}

// shortCommand renders argv for messages without flooding them.
func shortCommand(args []string) string {
	s := strings.Join(args, " ")
	if len(s) > 200 {
		s = s[:197] + "..."
	}
	return s
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

// lastLines returns up to n final non-empty lines, joined by "; ".
func (t *tailBuffer) lastLines(n int) string {
	lines := strings.Split(strings.TrimSpace(string(t.buf)), "\n")
	var keep []string
	for i := len(lines) - 1; i >= 0 && len(keep) < n; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			keep = append(keep, l)
		}
	}
	for i, j := 0, len(keep)-1; i < j; i, j = i+1, j-1 {
		keep[i], keep[j] = keep[j], keep[i]
	}
	return strings.Join(keep, "; ")
}
