// Package cli is bootlace's command line: bootc-compatible install verbs
// plus fetch and print-configuration, mapped onto the install package.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/event"
	"github.com/bootlace/bootlace/internal/fetch"
	"github.com/bootlace/bootlace/internal/imgref"
	"github.com/bootlace/bootlace/internal/install"
	"github.com/bootlace/bootlace/internal/progress"
	"github.com/spf13/cobra"
)

// Version is set at build time.
var Version = "dev"

// common holds the flags every install verb shares.
type common struct {
	sourceImgref, targetImgref, targetTransport, stateroot string
	kargs, kargDeletes                                     []string
	disableSELinux, genericImage                           bool
	bootloader, rootSSHKeys, boundImages                   string
	authfile, certDir, creds, sigPolicy                    string
	tlsVerify, enforceSigPolicy                            bool
	progress                                               string
	progressFD                                             int
	jsonReport, verbose, quiet, dryRun                     bool
}

func (c *common) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&c.sourceImgref, "source-imgref", "", "image to install, as TRANSPORT:NAME (docker://, oci:, oci-archive:, docker-archive:, containers-storage:, dir:)")
	f.StringVar(&c.targetImgref, "target-imgref", "", "image name recorded for updates (default: the source name)")
	f.StringVar(&c.targetTransport, "target-transport", "registry", "transport recorded for updates")
	f.StringVar(&c.stateroot, "stateroot", "", "ostree stateroot (default: the image's install config, else \"default\")")
	f.StringArrayVar(&c.kargs, "karg", nil, "add a kernel argument (repeatable)")
	f.StringArrayVar(&c.kargDeletes, "karg-delete", nil, "delete a kernel argument: KEY removes every KEY..., KEY=VALUE only that pair (repeatable)")
	f.BoolVar(&c.disableSELinux, "disable-selinux", false, "disable SELinux in the target (adds selinux=0)")
	f.BoolVar(&c.genericImage, "generic-image", false, "install boot code for every firmware and write no NVRAM entries")
	f.StringVar(&c.bootloader, "bootloader", "auto", "boot loader: auto, grub or none")
	f.StringVar(&c.rootSSHKeys, "root-ssh-authorized-keys", "", "file with SSH public keys for root in the installed system")
	f.StringVar(&c.boundImages, "bound-images", "stored", "logically bound images: stored, pull or skip")
	f.StringVar(&c.authfile, "authfile", "", "registry credentials file (containers auth.json format)")
	f.StringVar(&c.certDir, "cert-dir", "", "directory of CA certificates (*.crt) for registries")
	f.StringVar(&c.creds, "creds", "", "registry credentials USER[:PASSWORD]")
	f.BoolVar(&c.tlsVerify, "tls-verify", true, "verify registry TLS certificates")
	f.StringVar(&c.sigPolicy, "signature-policy", "", "signature policy file (default /etc/containers/policy.json)")
	f.BoolVar(&c.enforceSigPolicy, "enforce-container-sigpolicy", false, "refuse an accept-anything signature policy and record a signed origin")
	f.StringVar(&c.progress, "progress", "auto", "progress output: auto, plain, json or none")
	f.IntVar(&c.progressFD, "progress-fd", 0, "write JSON-lines progress to this file descriptor")
	f.BoolVar(&c.jsonReport, "json", false, "print a JSON report on stdout when done")
	f.BoolVar(&c.dryRun, "dry-run", false, "fetch and inspect, print the install plan as JSON, and write nothing to the target")
	f.BoolVarP(&c.verbose, "verbose", "v", false, "print more detail")
	f.BoolVarP(&c.quiet, "quiet", "q", false, "print only warnings and errors")
}

func (c *common) options(cmd *cobra.Command) (install.Options, error) {
	var o install.Options
	if c.sourceImgref == "" {
		return o, errs.New(errs.Usage, "choosing the image to install", "", errors.New("no --source-imgref given"),
			"pass --source-imgref TRANSPORT:NAME, e.g. --source-imgref docker://quay.io/example/os:latest or --source-imgref oci-archive:/path/image.tar")
	}
	src, err := imgref.Parse(c.sourceImgref)
	if err != nil {
		return o, errs.New(errs.Usage, "parsing --source-imgref", "", err, "")
	}
	tt, err := imgref.ParseTransport(c.targetTransport)
	if err != nil {
		return o, errs.New(errs.Usage, "parsing --target-transport", "", err, "")
	}
	switch c.bootloader {
	case "auto", "grub", "none":
	default:
		return o, errs.New(errs.Usage, "parsing --bootloader", "", fmt.Errorf("unknown boot loader %q", c.bootloader), "use auto, grub or none")
	}
	switch c.boundImages {
	case "stored", "pull", "skip":
	default:
		return o, errs.New(errs.Usage, "parsing --bound-images", "", fmt.Errorf("unknown mode %q", c.boundImages), "use stored, pull or skip")
	}
	o = install.Options{Source: src, TargetImgref: c.targetImgref, TargetTransport: tt, Stateroot: c.stateroot,
		Kargs: c.kargs, KargDeletes: c.kargDeletes, DisableSELinux: c.disableSELinux, GenericImage: c.genericImage,
		Bootloader: c.bootloader, RootSSHKeysFile: c.rootSSHKeys, DryRun: c.dryRun,
		Fetch: fetch.Options{AuthFile: c.authfile, CertDir: c.certDir, Creds: c.creds, SignaturePolicy: c.sigPolicy,
			EnforceSigPolicy: c.enforceSigPolicy}}
	if cmd.Flags().Changed("tls-verify") {
		v := c.tlsVerify
		o.Fetch.TLSVerify = &v
	}
	sink, err := c.sink(cmd.ErrOrStderr())
	if err != nil {
		return o, err
	}
	o.Events = sink
	return o, nil
}

func (c *common) sink(stderr io.Writer) (event.Sink, error) {
	var sinks event.Multi
	switch c.progress {
	case "auto", "plain":
		if !c.quiet {
			sinks = append(sinks, progress.NewLines(stderr, c.verbose))
		}
	case "json":
		sinks = append(sinks, progress.NewJSON(stderr))
	case "none":
	default:
		return nil, errs.New(errs.Usage, "parsing --progress", "", fmt.Errorf("unknown mode %q", c.progress), "use auto, plain, json or none")
	}
	if c.progressFD > 0 {
		f := os.NewFile(uintptr(c.progressFD), "progress-fd")
		if f == nil {
			return nil, errs.New(errs.Usage, "opening --progress-fd", strconv.Itoa(c.progressFD), errors.New("not an open file descriptor"), "")
		}
		sinks = append(sinks, progress.NewJSON(f))
	}
	return sinks, nil
}

// finish prints the report and emits the result event.
func (c *common) finish(cmd *cobra.Command, o install.Options, rep *install.Report) error {
	if o.Events != nil {
		o.Events.Emit(event.Event{Type: event.Result, Data: rep})
	}
	if c.dryRun {
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(rep.Plan)
	}
	if c.jsonReport {
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	if !c.quiet {
		fmt.Fprintf(cmd.OutOrStdout(), "Installed %s (%s)\n  deployment: %s\n  kernel arguments: %s\n", rep.Image, rep.ManifestDigest, rep.Deployment, strings.Join(rep.Kargs, " "))
	}
	return nil
}

// Execute runs the command line and returns the process exit code.
func Execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	kind := errs.KindOf(err)
	if ctx.Err() != nil {
		kind = errs.Interrupted
	}
	var e *errs.Error
	if !errors.As(err, &e) && isUsageError(err) {
		kind = errs.Usage
	}
	fmt.Fprintf(stderr, "error: %v\n", err)
	return kind.ExitCode()
}

// isUsageError recognises cobra's own flag and argument errors.
func isUsageError(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown flag", "unknown command", "unknown shorthand", "flag needs an argument", "invalid argument", "accepts ", "requires at least", "required flag"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}
