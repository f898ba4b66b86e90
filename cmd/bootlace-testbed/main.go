// Command bootlace-testbed runs the project's test bed by hand: a loopback
// registry with TLS and auth, and QEMU boots of raw disk images.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/bootlace/bootlace/internal/testbed/qemu"
	"github.com/bootlace/bootlace/internal/testbed/registry"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := &cobra.Command{
		Use:           "bootlace-testbed",
		Short:         "Loopback registry and QEMU boot harness for bootlace tests",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(registryCmd(), bootCmd())
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "bootlace-testbed:", err)
		stop()
		os.Exit(1)
	}
}

func registryCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "registry", Short: "Run a docker-registry on 127.0.0.1 and push images to it"}
	cmd.AddCommand(registryStartCmd(), registryPushCmd())
	return cmd
}

func registryStartCmd() *cobra.Command {
	var dir string
	var opts registry.Options
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Start a registry and keep it running until Ctrl-C",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if dir == "" {
				d, err := os.MkdirTemp("", "bootlace-registry-")
				if err != nil {
					return fmt.Errorf("creating registry dir: %w", err)
				}
				dir = d
			}
			r, err := registry.Start(ctx, dir, opts)
			if err != nil {
				return err
			}
			defer r.Stop()
			printRegistry(cmd.OutOrStdout(), r)
			<-ctx.Done()
			fmt.Fprintln(cmd.ErrOrStderr(), "stopping registry")
			return r.Stop()
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "working directory for config, storage and certificates (default: a new temp dir)")
	cmd.Flags().BoolVar(&opts.NoTLS, "no-tls", false, "serve plain HTTP")
	cmd.Flags().BoolVar(&opts.NoAuth, "no-auth", false, "disable htpasswd auth")
	cmd.Flags().StringVar(&opts.User, "user", "", "user name (default bootlace)")
	cmd.Flags().StringVar(&opts.Password, "password", "", "password (default: random)")
	return cmd
}

func printRegistry(w io.Writer, r *registry.Registry) {
	fmt.Fprintf(w, "address:   %s\n", r.Addr)
	fmt.Fprintf(w, "dir:       %s\n", r.Dir)
	fmt.Fprintf(w, "log:       %s\n", r.LogPath)
	tlsArg := "--tls-verify=false"
	if r.TLS {
		fmt.Fprintf(w, "cert dir:  %s\n", r.CertDir)
		tlsArg = "--cert-dir " + r.CertDir
	}
	credArg := ""
	if r.Auth {
		fmt.Fprintf(w, "user:      %s\npassword:  %s\nauth file: %s\n", r.User, r.Password, r.AuthFile)
		credArg = " --authfile " + r.AuthFile
	}
	fmt.Fprintf(w, "example:   skopeo copy --dest-%s%s oci-archive:IMAGE.tar %s\n",
		strings.TrimPrefix(tlsArg, "--"), strings.Replace(credArg, "--authfile", "--dest-authfile", 1), r.Ref("REPO:TAG"))
	fmt.Fprintf(w, "push:      bootlace-testbed registry push --dir %s oci-archive:IMAGE.tar REPO:TAG\n", r.Dir)
	fmt.Fprintln(w, "running; press Ctrl-C to stop")
}

func registryPushCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "push --dir DIR SOURCE REPO:TAG",
		Short: "Push an image (e.g. oci-archive:/path.tar) to a registry started with the same --dir",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := registry.Load(dir)
			if err != nil {
				return err
			}
			start := time.Now()
			digest, err := r.Push(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s@%s\n", r.Ref(args[1]), digest)
			fmt.Fprintf(cmd.ErrOrStderr(), "pushed in %.1fs\n", time.Since(start).Seconds())
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the running registry's --dir (required)")
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}

func bootCmd() *cobra.Command {
	var (
		opts     qemu.Options
		firmware string
		quiet    bool
	)
	cmd := &cobra.Command{
		Use:   "boot [flags] DISK",
		Short: "Boot a raw disk image in QEMU (TCG) and watch its serial console",
		Long: "Boot a raw disk image in QEMU (TCG) under OVMF or SeaBIOS. The console is shown live\n" +
			"and saved to --log. Exit status 0 when every --marker appeared (or, without markers,\n" +
			"when the guest powered off cleanly); 1 on a fail pattern, a deadline or Ctrl-C.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Disk = args[0]
			opts.Firmware = qemu.Firmware(firmware)
			if opts.LogPath == "" {
				opts.LogPath = filepath.Join(os.TempDir(), "bootlace-testbed-"+filepath.Base(opts.Disk)+".console.log")
			}
			if !quiet {
				opts.Console = cmd.OutOrStdout()
			}
			errw := cmd.ErrOrStderr()
			fmt.Fprintf(errw, "booting %s (%s), console log %s\n", opts.Disk, opts.Firmware, opts.LogPath)
			res, err := qemu.Boot(cmd.Context(), opts)
			if err != nil {
				var be *qemu.BootError
				if errors.As(err, &be) && !quiet {
					// The console was already shown live; skip the tail.
					return fmt.Errorf("booting %s: %s (console log %s)", opts.Disk, be.Reason, opts.LogPath)
				}
				return err
			}
			fmt.Fprintf(errw, "OK after %.1fs: markers seen %q, powered off by itself: %v, console log %s\n",
				res.Duration.Seconds(), res.Seen, res.PoweredOff, opts.LogPath)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&firmware, "firmware", string(qemu.UEFI), "uefi (OVMF) or bios (SeaBIOS)")
	f.DurationVar(&opts.Timeout, "timeout", qemu.DefaultTimeout, "overall time limit")
	f.DurationVar(&opts.EarlyDeadline, "early-deadline", qemu.DefaultEarlyDeadline, `fail when no "Linux version" line within this; negative disables`)
	f.DurationVar(&opts.PoweroffWait, "poweroff-wait", qemu.DefaultPoweroffWait, "how long the guest may take to power off after the markers")
	f.StringArrayVar(&opts.Markers, "marker", nil, "console text that must appear (repeatable)")
	f.StringArrayVar(&opts.FailPatterns, "fail-pattern", nil, "console text that fails the boot (repeatable; default: kernel panic, grub rescue, emergency mode, ...)")
	f.IntVar(&opts.MemoryMB, "memory", qemu.DefaultMemoryMB, "guest memory in MiB")
	f.IntVar(&opts.CPUs, "cpus", qemu.DefaultCPUs, "guest vCPUs")
	f.BoolVar(&opts.Writable, "writable", false, "let the guest write to DISK (default: -snapshot)")
	f.StringVar(&opts.LogPath, "log", "", "console log file (default: in the temp dir, named after DISK)")
	f.BoolVarP(&quiet, "quiet", "q", false, "do not show the console live")
	f.StringArrayVar(&opts.ExtraArgs, "qemu-arg", nil, "extra QEMU argument (repeatable)")
	return cmd
}
