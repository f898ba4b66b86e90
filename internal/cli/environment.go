package cli

import (
	"fmt"
	"os"

	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/hostenv"
	"github.com/bootlace/bootlace/internal/install"
	"github.com/spf13/cobra"
)

// containerRunRoot holds containers-storage's run-time state (locks, mount
// counts) while bootlace reads the host's storage from inside a container.
// It is in the container's own /run, a tmpfs that goes with the container;
// reading an image needs none of the host's run-time state.
const containerRunRoot = "/run/bootlace/containers-storage"

// sourceFromEnvironment checks the environment bootlace runs in (inside a
// container: privileges, PID namespace, /dev, the host's storage) and,
// without --source-imgref, chooses the container's own image from the
// host's containers-storage. It returns the source reference to use, the
// name to record for updates ("" to keep the default) and the detection
// to report (nil when the source was given).
func (c *common) sourceFromEnvironment(cmd *cobra.Command) (src, target string, d *install.SourceDetection, err error) {
	facts, err := hostenv.Detect("/", os.Getenv)
	if err != nil {
		if c.sourceImgref != "" {
			// The source is explicit; an unreadable environment only
			// costs the early, specific errors below.
			return c.sourceImgref, "", nil, nil
		}
		return "", "", nil, errs.New(errs.Usage, "finding the container's own image", "", err, "pass --source-imgref TRANSPORT:NAME")
	}
	req := hostenv.Request{OwnImage: c.sourceImgref == "", TargetImgref: c.targetImgref != "",
		Target: cmd.Name() != "print-configuration"}
	if cmd.Name() == "to-disk" {
		if loop, _ := cmd.Flags().GetBool("via-loopback"); loop {
			req.Loopback = true
		} else if dev := cmd.Flags().Arg(0); dev != "" {
			_, statErr := os.Stat(dev)
			req.Device, req.DeviceExists = dev, statErr == nil
		}
	}
	if err := hostenv.Check(facts, req); err != nil {
		return "", "", nil, err
	}
	if !req.OwnImage {
		return c.sourceImgref, "", nil, nil
	}
	if c.targetImgref == "" {
		// Check made sure the name normalizes.
		target, _ = hostenv.NormalizeImageName(facts.Env.Image)
	}
	e := facts.Env
	d = &install.SourceDetection{Environment: "container", Engine: e.Engine, Container: e.Name, Image: e.Image,
		ImageID: e.ImageID, Storage: facts.Storage.GraphRoot, Driver: facts.Storage.Driver, Via: facts.Storage.Via}
	return facts.OwnImageRef(containerRunRoot), target, d, nil
}

// describe is the progress line announcing a detected source.
func describe(d *install.SourceDetection) string {
	return fmt.Sprintf("no --source-imgref: installing this container's image %s (ID %.12s) from the host's %s containers-storage at %s (%s)",
		d.Image, d.ImageID, d.Driver, d.Storage, d.Via)
}
