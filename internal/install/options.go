// Package install orchestrates an installation: it runs the phases (fetch,
// assemble, inspect, storage, deploy, bootloader, finalize) in order,
// reports through the event stream, records progress in a journal on the
// target, and unwinds a cleanup stack on error or signal.
package install

import (
	"time"

	"github.com/bootlace/bootlace/internal/boundimage"
	"github.com/bootlace/bootlace/internal/event"
	"github.com/bootlace/bootlace/internal/fetch"
	"github.com/bootlace/bootlace/internal/imgref"
)

// Options are common to every install verb.
type Options struct {
	// Source is the image to install.
	Source imgref.Ref
	// TargetImgref is the name recorded for updates; "" means the source
	// name without its transport.
	TargetImgref string
	// TargetTransport is the transport recorded for updates (default registry).
	TargetTransport imgref.Transport
	// Stateroot defaults to the install config's, else "default".
	Stateroot      string
	Kargs          []string
	KargDeletes    []string
	DisableSELinux bool
	GenericImage   bool
	// Bootloader is auto, grub or none.
	Bootloader      string
	RootSSHKeysFile string
	// BoundImages says where the image's logically bound images come from
	// (default stored, as bootc).
	BoundImages boundimage.Mode
	Fetch       fetch.Options
	Events      event.Sink
	// DryRun computes and returns the plan (Report.Plan) after fetching
	// and inspecting, and writes nothing to the target.
	DryRun bool
	// WorkDir overrides where host-side scratch files go (default os.TempDir()).
	WorkDir string
}

// DiskOptions are to-disk's.
type DiskOptions struct {
	Device      string
	Wipe        bool
	Filesystem  string
	RootSize    uint64
	ViaLoopback bool
	BlockSetup  string
}

// FSOptions are to-filesystem's.
type FSOptions struct {
	Root string
	// RootMountSpec and BootMountSpec override the root= and /boot specs;
	// nil means derive them, a pointer to "" means none.
	RootMountSpec *string
	BootMountSpec *string
	SkipFinalize  bool
}

// Report is the machine-readable summary of a successful install.
type Report struct {
	Image          string            `json:"image"`
	ManifestDigest string            `json:"manifest-digest"`
	TargetImage    string            `json:"target-image"`
	Origin         string            `json:"origin"`
	OstreeRef      string            `json:"ostree-ref"`
	Commit         string            `json:"commit"`
	Stateroot      string            `json:"stateroot"`
	Deployment     string            `json:"deployment"`
	Kargs          []string          `json:"kargs"`
	Bootloader     string            `json:"bootloader"`
	Device         string            `json:"device,omitempty"`
	RootUUID       string            `json:"root-uuid,omitempty"`
	BootUUID       string            `json:"boot-uuid,omitempty"`
	ESPUUID        string            `json:"esp-uuid,omitempty"`
	Filesystem     string            `json:"filesystem,omitempty"`
	Phases         map[string]string `json:"phase-durations"`
	Warnings       []string          `json:"warnings,omitempty"`
	// BoundImages are the logically bound images put in the target's store.
	BoundImages []boundimage.Result `json:"bound-images,omitempty"`
	Plan        *Plan               `json:"plan,omitempty"`
	phaseStart  map[string]time.Time
}
