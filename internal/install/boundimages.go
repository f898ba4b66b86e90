package install

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bootlace/bootlace/internal/boundimage"
	"github.com/bootlace/bootlace/internal/event"
	"github.com/bootlace/bootlace/internal/selabel"
)

// installBoundImages puts the image's logically bound images into the
// target's store, reading their declarations (and the image's registry
// credentials) from the deployment, never from the host. A re-run after
// the phase completed reuses the store; one after a kill inside it copies
// again, and the store keeps what was already complete.
func (r *run) installBoundImages(ctx context.Context, em event.Emitter, j *journal, t *target, d *deployment, plan *Plan) error {
	if j.done("bound-images") {
		r.report.BoundImages = j.Data.BoundImages
		em.Info("the bound images are already in the target's store from an earlier run")
		return nil
	}
	imgs, err := boundimage.List(d.dir)
	if err != nil {
		return err
	}
	mode := r.opts.BoundImages
	if mode == "" {
		mode = boundimage.Stored
	}
	opts := boundimage.Options{Mode: mode, Fetch: r.opts.Fetch, ScratchDir: filepath.Join(r.scratch, "bound-images"),
		TempDir: filepath.Join(t.physRoot, workDirName, "bound-images-tmp")}
	if plan.SELinux.Label {
		opts.Label = func(store string) error { return labelStore(d.dir, plan.SELinux.Type, store) }
	}
	res, err := boundimage.Install(ctx, t.physRoot, d.dir, imgs, opts, em)
	if err != nil {
		return err
	}
	r.report.BoundImages = res
	j.Data.BoundImages = res
	return j.mark("bound-images")
}

// labelStore labels the bound-image store from the deployed image's policy
// as bootc does: as if it were /var/lib/containers/storage, then a stamp
// file that tells bootc on the booted system the labels are done.
func labelStore(tree, policyType, store string) error {
	l, err := selabel.Load(tree, policyType)
	if err != nil {
		return err
	}
	if err := l.LabelTree(store, "/var/lib/containers/storage"); err != nil {
		return fmt.Errorf("labelling bound-image store: %w", err)
	}
	stamp := filepath.Join(store, ".bootc_labeled")
	if err := os.WriteFile(stamp, nil, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", stamp, err)
	}
	return nil
}
