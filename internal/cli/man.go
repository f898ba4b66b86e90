package cli

import (
	"fmt"
	"os"

	"github.com/bootlace/bootlace/internal/errs"
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// newMan is a hidden verb that writes the man pages of every command, so
// that the pages in docs/man/ are generated from the same help texts.
func newMan() *cobra.Command {
	return &cobra.Command{
		Use:     "man DIR",
		Short:   "Write man pages for every command into DIR",
		Example: `  bootlace man docs/man`,
		Hidden:  true,
		Args:    exactArgs(1, "one DIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return errs.New(errs.Usage, "creating man page directory", dir, err, "")
			}
			// cobra dates the pages from SOURCE_DATE_EPOCH when set, so that
			// regenerated pages stay identical when nothing changed.
			hdr := &doc.GenManHeader{Title: "BOOTLACE", Section: "8", Source: "bootlace " + Version, Manual: "bootlace manual"}
			root := cmd.Root()
			root.DisableAutoGenTag = true
			if err := doc.GenManTree(root, hdr, dir); err != nil {
				return fmt.Errorf("writing man pages to %s: %w", dir, err)
			}
			return nil
		},
	}
}
