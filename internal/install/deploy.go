package install

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/event"
	"github.com/bootlace/bootlace/internal/fetch"
	"github.com/bootlace/bootlace/internal/imgref"
	"github.com/bootlace/bootlace/internal/ostreecommit"
	"github.com/bootlace/bootlace/internal/sandbox"
	"golang.org/x/sys/unix"
)

// sysrootMount is where the sandbox sees the target's physical root.
const sysrootMount = "/sysroot"

// imageTool runs one of the image's own tools from tree, with the physical
// root bound at /sysroot. A tool the image lacks is an image error naming it.
func imageTool(ctx context.Context, tree, physRoot string, devices bool, args ...string) ([]byte, error) {
	var stderr bytes.Buffer
	spec := sandbox.Spec{Root: tree, Args: args, Devices: devices, Stderr: &stderr}
	if physRoot != "" {
		spec.Binds = []sandbox.Bind{{Source: physRoot, Target: sysrootMount, Recursive: true}}
	}
	out, err := sandbox.Output(ctx, spec)
	if err != nil {
		if errors.Is(err, sandbox.ErrNotFound) {
			return nil, errs.New(errs.Image, "running the image's "+args[0], "", err, "the image must ship "+args[0]+" ("+packageFor(args[0])+")")
		}
		return nil, fmt.Errorf("running the image's %s: %w", strings.Join(args, " "), err)
	}
	return out, nil
}

func packageFor(tool string) string {
	switch {
	case strings.HasPrefix(tool, "mkfs.ext") || tool == "mke2fs":
		return "e2fsprogs"
	case tool == "mkfs.xfs":
		return "xfsprogs"
	case tool == "mkfs.btrfs":
		return "btrfs-progs"
	case tool == "ostree":
		return "the ostree package"
	case strings.HasPrefix(tool, "grub"):
		return "grub-efi-amd64-bin and grub-pc-bin"
	}
	return "the package that provides it"
}

// deployment is what the deploy phase produced.
type deployment struct {
	commit string
	dir    string // host path of the deployment checkout
	ref    string
}

// deploy commits the staged tree into the target's ostree repository with
// bootc's container metadata and deploys it, all with the image's ostree.
func (r *run) deploy(ctx context.Context, em event.Emitter, t *target, im *fetch.Image, stage string, plan *Plan) (*deployment, error) {
	kargs, stateroot := plan.Kargs, plan.Stateroot
	tref := targetRef(r.opts)
	ostreeRef, err := tref.OstreeRef()
	if err != nil {
		return nil, errs.New(errs.Usage, "computing ostree ref for", tref.String(), err, "")
	}
	phys := t.physRoot
	repo := sysrootMount + "/ostree/repo"
	// The image's ostree runs from a hard-link view of the stage, so that
	// the commit can consume (move, not copy) the staged files.
	tools := filepath.Join(phys, workDirName, "tools")
	if err := os.RemoveAll(tools); err != nil {
		return nil, err
	}
	if err := linkFarm(stage, tools); err != nil {
		return nil, err
	}
	defer os.RemoveAll(tools)
	run := func(args ...string) ([]byte, error) { return imageTool(ctx, tools, phys, false, args...) }

	// A repository this run creates holds nothing but the new commit, so
	// the deploy's prune (a walk of every object) would find nothing to
	// remove; one left by an interrupted run may hold stale objects.
	fresh := false
	if _, err := os.Stat(filepath.Join(phys, "ostree/repo/config")); os.IsNotExist(err) {
		fresh = true
		em.Info("initializing ostree repository")
		if _, err := run("ostree", "admin", "init-fs", "--modern", sysrootMount); err != nil {
			return nil, err
		}
	}
	for _, kv := range [][2]string{{"sysroot.bootloader", "none"}, {"sysroot.bootprefix", "true"}, {"sysroot.readonly", "true"}} {
		if _, err := run("ostree", "config", "--repo="+repo, "set", kv[0], kv[1]); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(filepath.Join(phys, "ostree/deploy", stateroot)); os.IsNotExist(err) {
		if _, err := run("ostree", "admin", "os-init", "--sysroot="+sysrootMount, stateroot); err != nil {
			return nil, err
		}
	}

	em.Info("committing the image tree")
	commit, err := r.commit(ctx, em, run, phys, stage, im, ostreeRef, plan)
	if err != nil {
		return nil, err
	}

	// The origin tells ostree and bootc where updates come from.
	originPath := filepath.Join(phys, workDirName, "origin")
	origin := fmt.Sprintf("[origin]\ncontainer-image-reference=%s\n", tref.Origin(r.opts.Fetch.EnforceSigPolicy))
	if err := os.WriteFile(originPath, []byte(origin), 0o644); err != nil {
		return nil, fmt.Errorf("writing origin %s: %w", originPath, err)
	}
	// ostree's deploy starts with a syncfs; the tree's data is written by
	// now, or being written since assemble ended.
	if err := r.finishWriteback(); err != nil {
		return nil, err
	}
	em.Info("deploying " + commit)
	deployArgs := []string{"ostree", "admin", "deploy", "--sysroot=" + sysrootMount, "--os=" + stateroot,
		"--origin-file=" + filepath.Join(sysrootMount, workDirName, "origin")}
	if fresh {
		deployArgs = append(deployArgs, "--no-prune")
	}
	for _, k := range kargs {
		deployArgs = append(deployArgs, "--karg-append="+k)
	}
	deployArgs = append(deployArgs, commit)
	if _, err := run(deployArgs...); err != nil {
		return nil, err
	}
	dir, err := findDeployment(phys, stateroot, commit)
	if err != nil {
		return nil, err
	}
	d := &deployment{commit: commit, dir: dir, ref: ostreeRef}
	if err := r.configureDeployment(t, d, im); err != nil {
		return nil, err
	}
	return d, nil
}

// commit writes the staged tree into the repository as the ostree commit
// bootc's container import makes, consuming the stage. Without SELinux
// labels the Go writer does it (same commit checksum as ostree commit,
// files hashed in parallel); labels need the image's ostree and policy.
func (r *run) commit(ctx context.Context, em event.Emitter, run func(...string) ([]byte, error), phys, stage string, im *fetch.Image, ostreeRef string, plan *Plan) (string, error) {
	meta := []ostreecommit.KV{
		{Key: "ostree.manifest-digest", Value: im.ManifestDigest.String()},
		{Key: "ostree.manifest", Value: string(im.Manifest)},
		{Key: "ostree.container.image-config", Value: string(im.ConfigJSON)},
		{Key: "ostree.importer.version", Value: "bootlace"},
	}
	if v := imageVersion(im); v != "" {
		meta = append(meta, ostreecommit.KV{Key: "version", Value: v})
	}
	var ts time.Time
	if c := im.Config.Created; c != nil && !c.IsZero() {
		ts = c.UTC()
	}
	if !plan.SELinux.Label {
		start := time.Now()
		var files, bytes int64
		sum, err := ostreecommit.Commit(ctx, filepath.Join(phys, "ostree/repo"), stage, ostreecommit.Options{
			Branch: ostreeRef, Subject: im.Source.String(), Metadata: meta, Timestamp: ts,
			Progress: func(f, b int64) { files, bytes = f, b },
			Known:    r.known,
		})
		if err != nil {
			return "", errs.New(errs.Target, "committing image", im.Source.String(), err, "")
		}
		em.Info(fmt.Sprintf("committed %d files (%d MiB) in %s", files, bytes>>20, time.Since(start).Round(time.Millisecond)))
		return sum, nil
	}
	args := []string{"ostree", "--repo=" + sysrootMount + "/ostree/repo", "commit", "--branch=" + ostreeRef,
		"--tree=dir=" + filepath.Join(sysrootMount, strings.TrimPrefix(stage, phys)), "--consume", "--no-bindings", "--fsync=false",
		"--subject=" + im.Source.String(),
		// Labels come from the image's own policy (its /etc is the
		// sandbox's /etc), never from the host's.
		"--selinux-policy=/",
	}
	for _, kv := range meta {
		args = append(args, "--add-metadata-string="+kv.Key+"="+kv.Value)
	}
	if !ts.IsZero() {
		args = append(args, "--timestamp="+ts.Format(time.RFC3339))
	}
	for _, a := range args {
		// The kernel refuses a single argument over 128 KiB.
		if len(a) > 128<<10-1 {
			return "", errs.New(errs.Image, "committing image", im.Source.String(), errors.New("the image manifest or config is larger than 128 KiB"), "")
		}
	}
	out, err := run(args...)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

func imageVersion(im *fetch.Image) string {
	l := im.Config.Config.Labels
	if v := l["org.opencontainers.image.version"]; v != "" {
		return v
	}
	return l["version"]
}

func findDeployment(phys, stateroot, commit string) (string, error) {
	matches, err := filepath.Glob(filepath.Join(phys, "ostree/deploy", stateroot, "deploy", commit+".*"))
	if err != nil {
		return "", err
	}
	var dirs []string
	for _, m := range matches {
		if fi, err := os.Stat(m); err == nil && fi.IsDir() {
			dirs = append(dirs, m)
		}
	}
	if len(dirs) == 0 {
		return "", fmt.Errorf("ostree reported a deployment of %s but none is in %s", commit, filepath.Join(phys, "ostree/deploy", stateroot, "deploy"))
	}
	sort.Strings(dirs)
	return dirs[len(dirs)-1], nil
}

// configureDeployment writes what bootc writes into a fresh deployment:
// the /boot line of /etc/fstab and root's SSH keys.
func (r *run) configureDeployment(t *target, d *deployment, im *fetch.Image) error {
	etc := filepath.Join(d.dir, "etc")
	if t.bootMountSpec != "" {
		line := fmt.Sprintf("%s /boot auto ro 0 0\n", t.bootMountSpec)
		if err := writeFileAtomic(etc, "fstab", []byte(line), 0o644); err != nil {
			return err
		}
	}
	if r.opts.RootSSHKeysFile != "" {
		keys, err := os.ReadFile(r.opts.RootSSHKeysFile)
		if err != nil {
			return errs.New(errs.Usage, "reading --root-ssh-authorized-keys", r.opts.RootSSHKeysFile, err, "")
		}
		home := "root"
		if l, err := os.Readlink(filepath.Join(d.dir, "root")); err == nil {
			home = strings.TrimPrefix(filepath.Clean("/"+l), "/")
		}
		line := fmt.Sprintf("f~ /%s/.ssh/authorized_keys 600 root root - %s\n", home, base64Std(keys))
		if err := os.MkdirAll(filepath.Join(etc, "tmpfiles.d"), 0o755); err != nil {
			return err
		}
		if err := writeFileAtomic(filepath.Join(etc, "tmpfiles.d"), "bootc-root-ssh.conf", []byte(line), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// writeFileAtomic writes dir/name through a temporary file and a rename,
// refusing to follow a symlink the image may have put at that name.
func writeFileAtomic(dir, name string, data []byte, mode os.FileMode) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("opening %s: %w", dir, err)
	}
	defer root.Close()
	tmp := "." + name + ".bootlace-tmp"
	if err := root.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("writing %s/%s: %w", dir, name, err)
	}
	if err := root.Rename(tmp, name); err != nil {
		return fmt.Errorf("writing %s/%s: %w", dir, name, err)
	}
	return nil
}

// writeAleph records what was installed in the physical root, with bootc's
// kebab-case keys.
func (r *run) writeAleph(t *target, im *fetch.Image, selinux string) error {
	tref := targetRef(r.opts)
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	image := im.Source.Name
	if d := r.opts.Detected; d != nil && d.Image != "" {
		// The image the container ran, not the storage path it was read from.
		image = d.Image
	}
	aleph := map[string]any{
		"image":        image,
		"digest":       im.ManifestDigest.String(),
		"target-image": tref.Name,
		"kernel":       unix.ByteSliceToString(uts.Release[:]),
		"selinux":      selinux,
		"version":      imageVersion(im),
	}
	if ts := im.Config.Created; ts != nil {
		aleph["timestamp"] = ts.UTC().Format(time.RFC3339)
	}
	if l := im.Config.Config.Labels; len(l) > 0 {
		aleph["labels"] = l
	}
	raw, err := json.Marshal(aleph) // map keys marshal sorted: canonical
	if err != nil {
		return err
	}
	return writeFileAtomic(t.physRoot, ".bootc-aleph.json", raw, 0o644)
}

// checkComposefs refuses an image whose prepare-root.conf requires
// composefs when the image's own ostree was built without it: the
// deployment could not boot.
func checkComposefs(ctx context.Context, tree string, plan *Plan) error {
	if plan.PrepareRoot.Composefs != "yes" {
		return nil
	}
	out, err := imageTool(ctx, tree, "", false, "ostree", "--version")
	if err != nil {
		return err
	}
	if !bytes.Contains(out, []byte("- composefs")) {
		return errs.New(errs.Image, "checking prepare-root.conf", plan.PrepareRoot.Path,
			errors.New("it requires composefs but the image's ostree is built without composefs support"),
			"set [composefs] enabled = no (or maybe) in the image, or ship an ostree with composefs")
	}
	return nil
}

// origin prints the origin line for the report.
func originFor(ref imgref.Ref, signed bool) string { return ref.Origin(signed) }

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
