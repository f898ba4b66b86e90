// Package privatens moves bootlace into a private mount namespace before it
// does anything else. Every mount it makes then lives only there: when the
// process ends, even by SIGKILL, the kernel drops them, so the host never
// keeps a mount of ours.
package privatens

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

const envMarker = "_BOOTLACE_PRIVATE_MOUNTNS"

// Enter re-executes the program in a new mount namespace unless it already
// runs in one. In the parent it waits and returns the child's exit code with
// reexeced true; the caller must exit with it. In the child it makes every
// mount private and returns reexeced false.
func Enter() (reexeced bool, exitCode int, err error) {
	if os.Getenv(envMarker) == "1" {
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return false, 0, fmt.Errorf("making mounts private: %w", err)
		}
		return false, 0, nil
	}
	if os.Geteuid() != 0 {
		// Without root there is nothing to mount; commands that need root
		// report it themselves.
		return false, 0, nil
	}
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envMarker+"=1")
	cmd.ExtraFiles = extraFiles()
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return true, 1, fmt.Errorf("entering a private mount namespace: %w", err)
	}
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	if cmd.ProcessState == nil {
		return true, 1, err
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return true, 128 + int(ws.Signal()), nil
	}
	return true, cmd.ProcessState.ExitCode(), nil
}

// extraFiles passes inherited descriptors 3..9 through (--progress-fd).
func extraFiles() []*os.File {
	var files []*os.File
	last := -1
	for fd := 3; fd < 10; fd++ {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil {
			last = fd
		}
	}
	for fd := 3; fd <= last; fd++ {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil {
			// Keep numbering: a placeholder for a closed descriptor.
			f, _ := os.Open(os.DevNull)
			files = append(files, f)
			continue
		}
		files = append(files, os.NewFile(uintptr(fd), fmt.Sprintf("fd%d", fd)))
	}
	return files
}
