package hostenv

import (
	"errors"
	"fmt"
	"strings"

	"github.com/bootlace/bootlace/internal/errs"
	"go.podman.io/image/v5/docker/reference"
)

// Request is what the command line asks of the environment.
type Request struct {
	// OwnImage is set when no --source-imgref was given: the source is the
	// container's own image.
	OwnImage bool
	// TargetImgref is set when --target-imgref was given, so the image name
	// from /run/.containerenv is not needed.
	TargetImgref bool
	// Device is to-disk's device node; "" for --via-loopback and
	// to-filesystem. DeviceExists says whether it is present.
	Device       string
	DeviceExists bool
	// Loopback is to-disk --via-loopback, which needs /dev/loop-control.
	Loopback bool
	// Target is set for verbs that write to disks (not print-configuration):
	// they need the host's /dev.
	Target bool
}

// podmanRun is the documented invocation, quoted in hints.
const podmanRun = "podman run --rm --privileged --pid=host -v /dev:/dev -v /var/lib/containers:/var/lib/containers IMAGE bootlace install ..."

// Check decides whether an install as r asks can run in the environment f
// describes. Outside a container only a missing --source-imgref is an error
// (there is no own image to install). Inside one, every fact an
// in-container install depends on is checked, and the error names the
// podman flag that provides it.
func Check(f *Facts, r Request) error {
	if !f.InContainer {
		if r.OwnImage {
			return errs.New(errs.Usage, "choosing the image to install", "", errors.New("no --source-imgref given, and bootlace is not running in a container whose image it could install"),
				"pass --source-imgref TRANSPORT:NAME, e.g. --source-imgref docker://quay.io/example/os:latest or --source-imgref oci-archive:/path/image.tar")
		}
		return nil
	}
	where := "in a container (" + strings.Join(f.Markers, ", ") + ")"
	usage := func(err error, hint string) error {
		return errs.New(errs.Usage, "checking the container bootlace runs in", "", err, hint)
	}
	if (f.Env != nil && f.Env.Rootless) || f.UserNS {
		return usage(errors.New("the container is rootless (it runs in a user namespace): it cannot create loop devices, partitions or mounts on the host's disks"),
			"run the container as root, e.g. sudo "+podmanRun)
	}
	if !f.CapSysAdmin {
		return usage(fmt.Errorf("bootlace runs %s without CAP_SYS_ADMIN, so it can neither mount nor partition", where),
			"add --privileged to podman run: "+podmanRun)
	}
	if !r.Target {
		return checkOwnImage(f, r, usage)
	}
	if f.DevFS != "devtmpfs" {
		return usage(fmt.Errorf("/dev in the container is the engine's own %s, not the host's devtmpfs: the loop devices and partitions the install creates would not appear in it", orNothing(f.DevFS)),
			"add -v /dev:/dev to podman run")
	}
	if r.Loopback && !f.LoopControl {
		return usage(errors.New("/dev/loop-control is missing in the container, so --via-loopback cannot attach the disk image"),
			"add -v /dev:/dev to podman run")
	}
	if r.Device != "" && !r.DeviceExists {
		return errs.New(errs.Target, "opening target device", r.Device, errors.New("no such device node in the container"),
			"bind the host's /dev with -v /dev:/dev and check the device name (lsblk on the host)")
	}
	return checkOwnImage(f, r, usage)
}

// checkOwnImage checks what installing the container's own image needs.
func checkOwnImage(f *Facts, r Request, usage func(error, string) error) error {
	if !r.OwnImage {
		return nil
	}
	switch {
	case f.Env == nil:
		return errs.New(errs.Usage, "choosing the image to install", "",
			fmt.Errorf("no --source-imgref given, and no %s names a container image to install (container markers: %s)", ContainerEnvPath, strings.Join(f.Markers, ", ")),
			"pass --source-imgref TRANSPORT:NAME, e.g. --source-imgref docker://quay.io/example/os:latest; bootlace finds the container's own image only under podman")
	case f.Env.ImageID == "":
		return usage(fmt.Errorf("no --source-imgref given, and %s names no image ID (podman writes it only for privileged containers)", ContainerEnvPath),
			"add --privileged to podman run, or pass --source-imgref TRANSPORT:NAME")
	case !validID(f.Env.ImageID):
		return usage(fmt.Errorf("%s: imageid %q is not a 64-digit image ID", ContainerEnvPath, f.Env.ImageID),
			"pass --source-imgref TRANSPORT:NAME")
	case f.UnsupportedDriver != "":
		return usage(fmt.Errorf("the container's image is in %s containers-storage, which this build of bootlace cannot read", f.UnsupportedDriver),
			"pass --source-imgref with a registry or archive copy of the image")
	case f.Storage == nil && f.PID1Unreachable != "":
		return usage(fmt.Errorf("the host's containers-storage cannot be reached through PID 1 (/proc/1/root: %s), and no %s is bound in holding image %s",
			f.PID1Unreachable, HostStorage, short(f.Env.ImageID)),
			"bind the host's storage with -v /var/lib/containers:/var/lib/containers")
	case f.Storage == nil && !f.HostPID:
		return usage(fmt.Errorf("PID 1 is in the container's own PID namespace, so the host's containers-storage (/proc/1/root%s) is out of reach, and no %s is bound in holding image %s",
			HostStorage, HostStorage, short(f.Env.ImageID)),
			"add --pid=host to podman run (or bind the host's storage with -v /var/lib/containers:/var/lib/containers)")
	case f.Storage == nil:
		return usage(fmt.Errorf("image %s is not in the host's containers-storage (looked in %s)", short(f.Env.ImageID), orNothing(strings.Join(f.StorageSearched, ", "))),
			"bind the storage podman runs from with -v /var/lib/containers:/var/lib/containers (a custom graph root at /var/lib/containers/storage), or pass --source-imgref")
	}
	if !r.TargetImgref {
		if _, err := NormalizeImageName(f.Env.Image); err != nil {
			return usage(fmt.Errorf("%s: the container's image name %q cannot be recorded for updates: %w", ContainerEnvPath, f.Env.Image, err),
				"pass --target-imgref NAME, e.g. --target-imgref quay.io/example/os:latest")
		}
	}
	return nil
}

// OwnImageRef is the containers-storage reference of the container's own
// image in the storage Detect found, by image ID (names can be re-tagged
// while the container runs; the ID cannot). runRoot is a private directory
// for the store's run-time state (locks, mount counts); the host's run
// root is not needed to read an image. Call it after Check succeeded.
func (f *Facts) OwnImageRef(runRoot string) string {
	return fmt.Sprintf("containers-storage:[%s@%s+%s]@%s", f.Storage.Driver, f.Storage.GraphRoot, runRoot, f.Env.ImageID)
}

// NormalizeImageName turns an engine's image name into the fully qualified
// form recorded for updates: "fedora" becomes docker.io/library/fedora:latest,
// "quay.io/x/os" quay.io/x/os:latest; localhost/NAME:TAG stays as it is.
func NormalizeImageName(name string) (string, error) {
	if name == "" {
		return "", errors.New("empty image name (the container was started by image ID)")
	}
	if validID(strings.TrimPrefix(name, "sha256:")) {
		return "", errors.New("the container was started by image ID, not by name")
	}
	n, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		return "", err
	}
	return reference.TagNameOnly(n).String(), nil
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func orNothing(s string) string {
	if s == "" {
		return "nothing"
	}
	return s
}
