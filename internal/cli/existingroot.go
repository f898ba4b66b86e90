package cli

import (
	"fmt"

	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/install"
	"github.com/spf13/cobra"
)

// replaceModes are --replace's values.
var replaceModes = []string{install.ReplaceWipe, install.ReplaceAlongside}

func checkReplace(mode string) error {
	switch mode {
	case "", install.ReplaceWipe, install.ReplaceAlongside:
		return nil
	}
	return errs.New(errs.Usage, "parsing --replace", mode, fmt.Errorf("unknown replace mode"), "use wipe or alongside")
}

func newToExistingRoot(sess *session) *cobra.Command {
	c := common{sess: sess}
	var eo install.ExistingRootOptions
	cmd := &cobra.Command{
		Use:   "to-existing-root [flags] [ROOT]",
		Short: "Install next to the running system, on its root filesystem",
		Long: `Install onto the root filesystem of the running system (or of the system whose root is
mounted at ROOT), next to it: the old root stays, reachable at /sysroot once the new
deployment has booted, while /boot and the ESP are emptied so that the new deployment is
what boots. ROOT defaults to /target; when that is not a mount point bootlace mounts the
host's root there itself, in its private mount namespace (pid 1's root: in a container,
run it with --pid=host). Kernel arguments root=, rootflags= and rd.* are taken from the
running kernel when ROOT is the booted root. Filesystems are not finalized.

Targeting the booted root prints a warning and waits 20 seconds (Ctrl-C cancels) unless
--acknowledge-destructive is given.`,
		Example: `  # Replace the running system with an image at the next boot
  bootlace install to-existing-root --source-imgref docker://quay.io/example/os:latest

  # The same from the image's own container, as with bootc (the source is the container's image)
  podman run --rm --privileged --pid=host -v /dev:/dev -v /var/lib/containers:/var/lib/containers \
      -v /usr/local/bin/bootlace:/usr/bin/bootlace:ro quay.io/example/os:latest \
      bootlace install to-existing-root

  # A system whose root is mounted at /mnt, and what the install would do
  bootlace install to-existing-root --dry-run --source-imgref oci-archive:os.tar /mnt`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return exactArgs(1, "at most one ROOT directory")(cmd, args)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := c.options(cmd)
			if err != nil {
				return err
			}
			if len(args) == 1 {
				eo.Root = args[0]
			}
			if err := checkReplace(eo.Replace); err != nil {
				return err
			}
			rep, err := install.ToExistingRoot(cmd.Context(), o, eo)
			if err != nil {
				return err
			}
			return c.finish(cmd, o, rep)
		},
	}
	c.register(cmd)
	f := cmd.Flags()
	f.StringVar(&eo.Replace, "replace", install.ReplaceAlongside, "what happens to the existing system: alongside (keep its root, clear /boot and the ESP) or wipe")
	f.BoolVar(&eo.Cleanup, "cleanup", false, "have the new system remove the old one on first boot (bootc's bootc-destructive-cleanup.service, if the image has it)")
	f.BoolVar(&eo.AcknowledgeDestructive, "acknowledge-destructive", false, "do not wait 20 seconds before changing the booted root filesystem")
	_ = cmd.RegisterFlagCompletionFunc("replace", cobra.FixedCompletions(replaceModes, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}
