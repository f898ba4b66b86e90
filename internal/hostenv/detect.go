package hostenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Paths bootlace looks at, relative to the root given to Detect.
const (
	ContainerEnvPath = "/run/.containerenv"
	dockerEnvPath    = "/.dockerenv"
	// HostStorage is containers-storage's default graph root on the host.
	HostStorage = "/var/lib/containers/storage"
	// hostPID1Root reaches the host's root through its PID 1, which only
	// works when the container shares the host's PID namespace.
	hostPID1Root = "/proc/1/root"
)

// Drivers bootlace can read an image from (the build excludes btrfs and zfs).
var Drivers = []string{"overlay", "vfs"}

// unsupportedDrivers are storage drivers whose images bootlace recognises
// but cannot read.
var unsupportedDrivers = []string{"btrfs", "zfs"}

// Facts are what the environment looks like, gathered by Detect and judged
// by Check. Tests build them directly.
type Facts struct {
	// InContainer is set when any container marker is present.
	InContainer bool
	// Markers names the markers found: "/run/.containerenv",
	// "container=ENGINE" (the environment variable), "/.dockerenv".
	Markers []string
	// Env is the parsed /run/.containerenv; nil when the file is absent.
	Env *ContainerEnv
	// HostPID is set when PID 1's root is not bootlace's root, i.e. PID 1
	// is the host's init: the container shares the host's PID namespace
	// (--pid=host). Outside a container it is meaningless.
	HostPID bool
	// PID1Unreachable says why PID 1's root could not be inspected (e.g.
	// "permission denied" when PID 1 is shielded from ptrace); "" when it was.
	PID1Unreachable string
	// CapSysAdmin is CAP_SYS_ADMIN in the effective set (--privileged).
	CapSysAdmin bool
	// UserNS is set when bootlace's user namespace is not the initial one
	// (uid 0 is mapped from another uid): a rootless container.
	UserNS bool
	// DevFS is the filesystem type mounted at /dev: "devtmpfs" when the
	// host's /dev is bound in (-v /dev:/dev), "tmpfs" for the engine's own.
	DevFS string
	// LoopControl is set when /dev/loop-control exists.
	LoopControl bool
	// Storage is where the container's image was found; nil when it was not
	// found in any candidate (or no image ID is known).
	Storage *Storage
	// StorageSearched lists the graph roots looked at, for error messages.
	StorageSearched []string
	// UnsupportedDriver names a storage driver that holds the image but
	// that this build cannot read.
	UnsupportedDriver string
}

// Storage is a containers-storage graph root holding the container's image.
type Storage struct {
	// GraphRoot is the path as bootlace sees it.
	GraphRoot string `json:"graph-root"`
	Driver    string `json:"driver"`
	// Via says how the host's storage is reached: "bind mount" or
	// "host PID 1 (--pid=host)".
	Via string `json:"via"`
}

// Detect gathers the facts under root ("/" normally). getenv reads the
// process environment (os.Getenv).
func Detect(root string, getenv func(string) string) (*Facts, error) {
	f := &Facts{}
	at := func(p string) string { return filepath.Join(root, p) }

	raw, err := os.ReadFile(at(ContainerEnvPath))
	switch {
	case err == nil:
		f.Markers = append(f.Markers, ContainerEnvPath)
		if f.Env, err = ParseContainerEnv(raw); err != nil {
			return nil, fmt.Errorf("reading %s: %w", at(ContainerEnvPath), err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("reading %s: %w", at(ContainerEnvPath), err)
	}
	if v := getenv("container"); v != "" {
		f.Markers = append(f.Markers, "container="+v)
	}
	if _, err := os.Lstat(at(dockerEnvPath)); err == nil {
		f.Markers = append(f.Markers, dockerEnvPath)
	}
	f.InContainer = len(f.Markers) > 0

	if f.HostPID, f.PID1Unreachable, err = differentRoots(at("/"), at(hostPID1Root)); err != nil {
		return nil, err
	}
	if f.CapSysAdmin, err = hasCap(at("/proc/self/status"), unix.CAP_SYS_ADMIN); err != nil {
		return nil, err
	}
	if f.UserNS, err = inUserNS(at("/proc/self/uid_map")); err != nil {
		return nil, err
	}
	if f.DevFS, err = fsTypeAt(at("/proc/self/mountinfo"), "/dev"); err != nil {
		return nil, err
	}
	_, err = os.Stat(at("/dev/loop-control"))
	f.LoopControl = err == nil

	if f.Env != nil && f.Env.ImageID != "" {
		f.findStorage(root, f.Env.ImageID)
	}
	return f, nil
}

// findStorage looks for the image in the bound-in storage first, then in
// the host's through PID 1's root.
func (f *Facts) findStorage(root, id string) {
	if !validID(id) {
		return
	}
	for _, c := range []struct{ path, via string }{
		{HostStorage, "bind mount"},
		{hostPID1Root + HostStorage, "host PID 1 (--pid=host)"},
	} {
		g := filepath.Join(root, c.path)
		if _, err := os.Stat(g); err != nil {
			continue
		}
		f.StorageSearched = append(f.StorageSearched, g)
		for _, d := range Drivers {
			if isDir(filepath.Join(g, d+"-images", id)) {
				f.Storage = &Storage{GraphRoot: g, Driver: d, Via: c.via}
				return
			}
		}
		for _, d := range unsupportedDrivers {
			if isDir(filepath.Join(g, d+"-images", id)) {
				f.UnsupportedDriver = d
			}
		}
	}
}

// validID accepts a full image ID: 64 lowercase hex digits. It keeps
// anything else from being joined into a path.
func validID(id string) bool {
	if len(id) != 64 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// differentRoots reports whether PID 1's root directory is another
// directory than ours. In a private PID namespace PID 1 is the container's
// own init and shares its root; with --pid=host it is the host's init.
// When PID 1's root cannot be inspected, unreachable says why: it is then
// no way to the host's storage either, whatever the PID namespace.
func differentRoots(ours, pid1 string) (different bool, unreachable string, err error) {
	var a, b unix.Stat_t
	if err := unix.Stat(ours, &a); err != nil {
		return false, "", fmt.Errorf("inspecting %s: %w", ours, err)
	}
	if err := unix.Stat(pid1, &b); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			return false, err.Error(), nil
		}
		return false, "", fmt.Errorf("inspecting %s: %w", pid1, err)
	}
	return a.Dev != b.Dev || a.Ino != b.Ino, "", nil
}

// hasCap reads the effective capability set from a /proc/PID/status file.
func hasCap(status string, capability int) (bool, error) {
	raw, err := os.ReadFile(status)
	if err != nil {
		return false, fmt.Errorf("reading capabilities: %w", err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return false, fmt.Errorf("parsing CapEff in %s: %w", status, err)
			}
			return mask&(1<<uint(capability)) != 0, nil
		}
	}
	return false, fmt.Errorf("no CapEff line in %s", status)
}

// inUserNS reports whether uid_map is anything but the initial namespace's
// identity map of every uid.
func inUserNS(uidMap string) (bool, error) {
	raw, err := os.ReadFile(uidMap)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", uidMap, err)
	}
	return strings.Join(strings.Fields(string(raw)), " ") != "0 0 4294967295", nil
}

// fsTypeAt returns the filesystem type of the last mount at dir in a
// mountinfo file ("" when nothing is mounted there).
func fsTypeAt(mountinfo, dir string) (string, error) {
	raw, err := os.ReadFile(mountinfo)
	if err != nil {
		return "", fmt.Errorf("reading mounts: %w", err)
	}
	fstype := ""
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, sf := strings.Fields(pre), strings.Fields(post)
		if len(pf) >= 5 && len(sf) >= 1 && unescapeMount(pf[4]) == dir {
			fstype = sf[0]
		}
	}
	return fstype, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
