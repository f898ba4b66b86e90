package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startUntilPhase starts bootlace with JSON progress on stderr and returns
// once the given phase has started (or the process ended).
func startUntilPhase(t *testing.T, phase string, args ...string) (*exec.Cmd, *bytes.Buffer, chan error) {
	t.Helper()
	return startUntil(t, func(ev progressEvent) bool { return ev.Type == "phase-start" && ev.Phase == phase }, args...)
}

// startUntil starts bootlace with JSON progress on stderr and returns once
// an event satisfies until (or the process ended).
func startUntil(t *testing.T, until func(progressEvent) bool, args ...string) (*exec.Cmd, *bytes.Buffer, chan error) {
	t.Helper()
	cmd := exec.Command(bootlaceBin, append(args, "--progress", "json")...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		seen := false
		for sc.Scan() {
			var ev progressEvent
			if json.Unmarshal(sc.Bytes(), &ev) == nil && !seen && until(ev) {
				seen = true
				close(started)
			}
		}
		if !seen {
			close(started)
		}
		done <- cmd.Wait()
	}()
	select {
	case <-started:
	case <-time.After(5 * time.Minute):
		t.Fatal("the awaited progress event never came")
	}
	return cmd, &stdout, done
}

// waitClean waits for the kernel to drop what a killed install held.
func waitClean(t *testing.T, before string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		now, _ := hostState(t)
		if now == before {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("state left on the host after the install died:\n%s", now)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestKillAndRerunToFilesystem kills the install with SIGKILL as each
// phase starts and re-runs the same command, which must succeed and reuse
// what the first run verified.
func TestKillAndRerunToFilesystem(t *testing.T) {
	requireRoot(t)
	archive := fixture(t, "bookworm")
	for _, phase := range []string{"fetch", "assemble", "inspect", "deploy", "bootloader", "finalize"} {
		t.Run(phase, func(t *testing.T) {
			pd := prepareDisk(t)
			args := []string{"install", "to-filesystem", "--bound-images", "skip", "--source-imgref", "oci-archive:" + archive,
				"--target-imgref", "quay.io/bootlace/fixture:bookworm", "--json", pd.root}
			before, _ := hostState(t)
			cmd, _, done := startUntilPhase(t, phase, args...)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-done
			waitClean(t, before)
			// finalize may have remounted the target read-only before the kill.
			_ = exec.Command("mount", "-o", "remount,rw", pd.root).Run()
			_ = exec.Command("mount", "-o", "remount,rw", pd.root+"/boot").Run()
			out := bootlace(t, args...)
			rep := parseReport(t, out)
			checkHostUnchanged(t, before, "")
			checkInstalled(t, pd.root, rep)
		})
	}
}

// checkInstalled looks at a finished target the way ostree would.
func checkInstalled(t *testing.T, root string, rep report) {
	t.Helper()
	deps, _ := filepath.Glob(filepath.Join(root, "ostree/deploy", rep.Stateroot, "deploy", "*.0"))
	if len(deps) != 1 || !strings.Contains(deps[0], rep.Commit) {
		t.Errorf("deployments %v, want exactly one of %s", deps, rep.Commit)
	}
	entries, _ := filepath.Glob(filepath.Join(root, "boot/loader/entries/*.conf"))
	if len(entries) != 1 {
		t.Errorf("boot entries %v, want one", entries)
	}
	if _, err := os.Stat(filepath.Join(root, "boot/grub/grub.cfg")); err != nil {
		t.Errorf("no grub.cfg: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, ".bootlace")); !os.IsNotExist(err) {
		t.Errorf("work directory left on the target: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, ".bootc-aleph.json")); err != nil {
		t.Errorf("no aleph file: %v", err)
	}
}

// TestSignalsUnwind interrupts installs with SIGINT and SIGTERM: exit code
// 130, nothing left on the host, and a to-disk target that cannot boot.
func TestSignalsUnwind(t *testing.T) {
	requireRoot(t)
	archive := fixture(t, "bookworm")
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			disk := sparseDisk(t, 8<<30)
			before, _ := hostState(t)
			cmd, _, done := startUntilPhase(t, "assemble", "install", "to-disk", "--bound-images", "skip", "--via-loopback",
				"--source-imgref", "oci-archive:"+archive, disk)
			_ = cmd.Process.Signal(sig)
			err := <-done
			code := -1
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			if code != 130 {
				t.Errorf("exit code %d after %s, want 130", code, sig)
			}
			waitClean(t, before)
			// The half-written disk must not look bootable: no partition table.
			f, err := os.Open(disk)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			hdr := make([]byte, 1024)
			if _, err := f.ReadAt(hdr, 0); err != nil {
				t.Fatal(err)
			}
			if string(hdr[512:520]) == "EFI PART" {
				t.Error("an interrupted to-disk install left a GPT on the disk")
			}
			// The same command with --wipe then succeeds.
			bootlace(t, "install", "to-disk", "--bound-images", "skip", "--wipe", "--via-loopback", "--source-imgref", "oci-archive:"+archive, "-q", disk)
		})
	}
}

// TestKillAndRerunToDisk kills a to-disk install with SIGKILL as each phase
// starts; the same command (with --wipe) then succeeds on the same disk.
func TestKillAndRerunToDisk(t *testing.T) {
	requireRoot(t)
	archive := fixture(t, "bookworm")
	for _, phase := range []string{"storage", "assemble", "deploy", "bootloader"} {
		t.Run(phase, func(t *testing.T) {
			disk := sparseDisk(t, 8<<30)
			args := []string{"install", "to-disk", "--bound-images", "skip", "--wipe", "--via-loopback", "--source-imgref", "oci-archive:" + archive, "--json", disk}
			before, _ := hostState(t)
			cmd, _, done := startUntilPhase(t, phase, args...)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-done
			waitClean(t, before)
			rep := parseReport(t, bootlace(t, args...))
			checkHostUnchanged(t, before, "")
			if rep.Commit == "" || rep.RootUUID == "" {
				t.Errorf("report after the re-run: %+v", rep)
			}
		})
	}
}

// TestDiskInUse holds a disk open exclusively, as a mounted filesystem or
// device-mapper would, and expects exit 4 without any write.
func TestDiskInUse(t *testing.T) {
	requireRoot(t)
	archive := fixture(t, "bookworm")
	disk := sparseDisk(t, 4<<30)
	loop := strings.TrimSpace(run(t, "", "losetup", "--show", "-f", disk))
	defer exec.Command("losetup", "-d", loop).Run()
	f, err := os.OpenFile(loop, os.O_RDWR|syscall.O_EXCL, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	before := hashFile(t, disk)
	_, stderr, code := bootlaceRun(t, nil, "install", "to-disk", "--bound-images", "skip", "--source-imgref", "oci-archive:"+archive, loop)
	if code != 4 || !strings.Contains(stderr, "in use") {
		t.Errorf("exit %d, want 4 with \"in use\":\n%s", code, stderr)
	}
	if hashFile(t, disk) != before {
		t.Error("the disk in use was written to")
	}
}
