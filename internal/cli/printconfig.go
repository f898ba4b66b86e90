package cli

import (
	"fmt"

	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/install"
	"github.com/spf13/cobra"
)

func newPrintConfiguration(sess *session) *cobra.Command {
	c := common{sess: sess}
	var all bool
	cmd := &cobra.Command{
		Use:   "print-configuration",
		Short: "Print the image's merged install configuration as JSON",
		Long: `Print the install configuration of the image given with --source-imgref, merged as bootc
merges it (kebab-case JSON). Kernel arguments are printed only with --all. The image's
configuration files are read from the image itself, never from this host.`,
		Example: `  bootlace install print-configuration --source-imgref oci-archive:os.tar --all`,
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := c.options(cmd)
			if err != nil {
				return err
			}
			o.Events = nil
			out, err := install.PrintConfiguration(cmd.Context(), o, all)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), string(out))
			return err
		},
	}
	c.register(cmd)
	cmd.Flags().BoolVar(&all, "all", false, "also print kernel arguments")
	_ = errs.Usage
	return cmd
}
