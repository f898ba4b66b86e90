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
	// Detected is set when Source was chosen from the environment (no
	// --source-imgref): the opened image's config must hash to its image
	// ID, and it is reported in the plan and the report.
	Detected *SourceDetection
}

// SourceDetection records how the source image was found when no
// --source-imgref was given: the container bootlace runs in, and the
// host's containers-storage holding that container's image.
type SourceDetection struct {
	// Environment is where bootlace found itself: "container".
	Environment string `json:"environment"`
	// Engine, Container and Image are /run/.containerenv's engine, name and
	// image (the name as the engine recorded it).
	Engine    string `json:"engine,omitempty"`
	Container string `json:"container,omitempty"`
	Image     string `json:"image,omitempty"`
	// ImageID is the image's ID (its config digest, hex), checked against
	// the image read from the storage.
	ImageID string `json:"image-id"`
	// Storage, Driver and Via say where the image was read: the graph root
	// as bootlace sees it, its driver, and how it is reached.
	Storage string `json:"storage"`
	Driver  string `json:"driver"`
	Via     string `json:"via"`
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
	// Replace is "" (the root must be empty), ReplaceWipe or ReplaceAlongside.
	Replace string
	// AcknowledgeDestructive skips the wait before changing the booted root.
	AcknowledgeDestructive bool
	// existingRoot and cleanup are to-existing-root's: root kernel
	// arguments inherited from the running kernel, and --cleanup.
	existingRoot bool
	cleanup      bool
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
	// SourceDetection is set when the source was found in the environment.
	SourceDetection *SourceDetection `json:"source-detection,omitempty"`
	phaseStart      map[string]time.Time
}
