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
	"sync"
	"time"

	"github.com/bootlace/bootlace/internal/boundimage"
	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/event"
	"github.com/bootlace/bootlace/internal/fetch"
	"github.com/bootlace/bootlace/internal/imgref"
	"github.com/bootlace/bootlace/internal/install"
	"github.com/bootlace/bootlace/internal/progress"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// Version is set at build time.
var Version = "dev"

// common holds the flags every install verb shares.
type common struct {
	sourceImgref, targetImgref, targetTransport, stateroot string
	kargs, kargDeletes                                     []string
	disableSELinux, genericImage                           bool
	bootloader, rootSSHKeys, boundImages                   string
	authfile, certDir, creds, sigPolicy, registriesDir     string
	registriesConf                                         string
	tlsVerify, enforceSigPolicy                            bool
	progress                                               string
	progressFD                                             int
	jsonReport, verbose, quiet, dryRun                     bool
	sess                                                   *session
}

func (c *common) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&c.sourceImgref, "source-imgref", "", "image to install, as TRANSPORT:NAME (docker://, oci:, oci-archive:, docker-archive:, containers-storage:, dir:); default inside a podman container: the container's own image, from the host's containers-storage")
	f.StringVar(&c.targetImgref, "target-imgref", "", "image name recorded for updates (default: the source name)")
	f.StringVar(&c.targetTransport, "target-transport", "registry", "transport recorded for updates")
	f.StringVar(&c.stateroot, "stateroot", "", "ostree stateroot (default: the image's install config, else \"default\")")
	f.StringArrayVar(&c.kargs, "karg", nil, "add a kernel argument (repeatable)")
	f.StringArrayVar(&c.kargDeletes, "karg-delete", nil, "delete a kernel argument: KEY removes every KEY..., KEY=VALUE only that pair (repeatable)")
	f.BoolVar(&c.disableSELinux, "disable-selinux", false, "disable SELinux in the target (adds selinux=0)")
	f.BoolVar(&c.genericImage, "generic-image", false, "install boot code for every firmware and write no NVRAM entries")
	f.StringVar(&c.bootloader, "bootloader", "auto", "boot loader: auto, grub or none")
	f.StringVar(&c.rootSSHKeys, "root-ssh-authorized-keys", "", "file with SSH public keys for root in the installed system")
	f.StringVar(&c.boundImages, "bound-images", "stored", "logically bound images: stored (copy from the host's containers-storage), pull (from their registries) or skip")
	f.StringVar(&c.authfile, "authfile", "", "registry credentials file (containers auth.json format)")
	f.StringVar(&c.certDir, "cert-dir", "", "directory of CA certificates (*.crt) for registries")
	f.StringVar(&c.creds, "creds", "", "registry credentials USER[:PASSWORD]")
	f.BoolVar(&c.tlsVerify, "tls-verify", true, "verify registry TLS certificates")
	f.StringVar(&c.registriesDir, "registries-dir", "", "registries.d directory for signature lookaside and sigstore attachments (default: the host's)")
	f.StringVar(&c.registriesConf, "registries-conf", "", "registries.conf file for mirrors and insecure registries (default: the host's)")
	f.StringVar(&c.sigPolicy, "signature-policy", "", "signature policy file (default /etc/containers/policy.json)")
	f.BoolVar(&c.enforceSigPolicy, "enforce-container-sigpolicy", false, "refuse an accept-anything signature policy and record a signed origin")
	f.StringVar(&c.progress, "progress", "auto", "progress on stderr: auto (bars on a terminal, plain lines otherwise), plain, json (JSON lines, docs/progress.md) or none")
	f.IntVar(&c.progressFD, "progress-fd", 0, "also write JSON-lines progress events to this open file descriptor (e.g. 3 with 3>events.jsonl)")
	f.BoolVar(&c.jsonReport, "json", false, "print the install report as JSON on stdout when done (fields in docs/progress.md)")
	f.BoolVar(&c.dryRun, "dry-run", false, "fetch and inspect, print the install plan as JSON, and write nothing to the target")
	f.BoolVarP(&c.verbose, "verbose", "v", false, "print more detail: every progress step, the phases' messages and timings")
	f.BoolVarP(&c.quiet, "quiet", "q", false, "print only warnings and errors (no bars, no summary)")
	for name, values := range map[string][]string{
		"progress":     {"auto", "plain", "json", "none"},
		"bootloader":   {"auto", "grub", "none"},
		"bound-images": {"stored", "pull", "skip"},
	} {
		_ = cmd.RegisterFlagCompletionFunc(name, cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp))
	}
}

func (c *common) options(cmd *cobra.Command) (install.Options, error) {
	var o install.Options
	// The sinks come first so that usage errors below reach them too.
	sink, err := c.sink(cmd.ErrOrStderr())
	if err != nil {
		return o, err
	}
	srcRef, detectedTarget, detected, err := c.sourceFromEnvironment(cmd)
	if err != nil {
		return o, err
	}
	src, err := imgref.Parse(srcRef)
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
	targetImgref := c.targetImgref
	if detected != nil {
		targetImgref = detectedTarget
		event.Emitter{Sink: sink, Phase: "resolve"}.Info(describe(detected))
	}
	o = install.Options{Source: src, TargetImgref: targetImgref, TargetTransport: tt, Stateroot: c.stateroot, Detected: detected,
		Kargs: c.kargs, KargDeletes: c.kargDeletes, DisableSELinux: c.disableSELinux, GenericImage: c.genericImage,
		Bootloader: c.bootloader, RootSSHKeysFile: c.rootSSHKeys, DryRun: c.dryRun, BoundImages: boundimage.Mode(c.boundImages),
		Fetch: fetch.Options{AuthFile: c.authfile, CertDir: c.certDir, Creds: c.creds, SignaturePolicy: c.sigPolicy, RegistriesDir: c.registriesDir,
			RegistriesConf: c.registriesConf, EnforceSigPolicy: c.enforceSigPolicy}}
	if cmd.Flags().Changed("tls-verify") {
		v := c.tlsVerify
		o.Fetch.TLSVerify = &v
	}
	o.Events = sink
	return o, nil
}

// session is what one command line run shares between its command and
// Execute: the progress sinks, so that a failure reaches them as an error
// event before the process exits.
type session struct {
	mu sync.Mutex
	// phase is the phase running now, named in the error event.
	phase string
	sinks event.Multi
	// bars is set when the terminal sink draws, which prints the summary itself.
	bars bool
	// stderrJSON is set when stderr carries JSON lines, which must not be
	// interleaved with text.
	stderrJSON bool
}

// track follows phase boundaries so a failure can name its phase.
func (s *session) track(e event.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch e.Type {
	case event.PhaseStart:
		s.phase = e.Phase
	case event.PhaseEnd:
		s.phase = ""
	}
}

func (s *session) emit(e event.Event) {
	s.mu.Lock()
	if e.Phase == "" {
		e.Phase = s.phase
	}
	s.mu.Unlock()
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	s.sinks.Emit(e)
}

// close stops the sinks that draw (the terminal bars); it is idempotent.
func (s *session) close() {
	for _, sk := range s.sinks {
		if c, ok := sk.(io.Closer); ok {
			_ = c.Close()
		}
	}
	s.sinks = nil
}

// sink builds the progress sinks the flags ask for and records them in the
// session. --progress auto draws bars when stderr is a terminal and prints
// plain lines otherwise; -q keeps only warnings.
func (c *common) sink(stderr io.Writer) (event.Sink, error) {
	var sinks event.Multi
	level := progress.Normal
	switch {
	case c.quiet:
		level = progress.Quiet
	case c.verbose:
		level = progress.Verbose
	}
	switch c.progress {
	case "auto":
		if f, ok := stderr.(*os.File); ok && !c.quiet && progress.CanDrawBars(f) {
			sinks = append(sinks, progress.NewBars(f, c.verbose))
			c.sess.bars = true
		} else {
			sinks = append(sinks, progress.NewLines(stderr, level))
		}
	case "plain":
		sinks = append(sinks, progress.NewLines(stderr, level))
	case "json":
		sinks = append(sinks, progress.NewJSON(stderr))
		c.sess.stderrJSON = true
	case "none":
	default:
		return nil, errs.New(errs.Usage, "parsing --progress", "", fmt.Errorf("unknown mode %q", c.progress), "use auto, plain, json or none")
	}
	if c.progressFD > 0 {
		// os.NewFile accepts any number; ask the kernel whether it is open.
		if _, err := unix.FcntlInt(uintptr(c.progressFD), unix.F_GETFD, 0); err != nil {
			return nil, errs.New(errs.Usage, "opening --progress-fd", strconv.Itoa(c.progressFD), fmt.Errorf("not an open file descriptor: %w", err),
				"open the descriptor for writing before starting bootlace, e.g. --progress-fd 3 3>progress.jsonl")
		}
		sinks = append(sinks, progress.NewJSON(os.NewFile(uintptr(c.progressFD), "progress-fd")))
	} else if c.progressFD < 0 {
		return nil, errs.New(errs.Usage, "parsing --progress-fd", strconv.Itoa(c.progressFD), errors.New("negative file descriptor"), "")
	}
	c.sess.sinks = sinks
	return append(event.Multi{event.Func(c.sess.track)}, sinks...), nil
}

// finish prints the report and emits the result event.
func (c *common) finish(cmd *cobra.Command, o install.Options, rep *install.Report) error {
	if o.Events != nil {
		o.Events.Emit(event.Event{Type: event.Result, Time: time.Now(), Data: rep})
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
	// The bars already ended with the summary; repeat it on stdout only
	// when stdout goes elsewhere (a file, a pipe).
	if f, ok := cmd.OutOrStdout().(*os.File); ok && c.sess.bars && progress.IsTerminal(f) {
		return nil
	}
	if !c.quiet {
		fmt.Fprintf(cmd.OutOrStdout(), "Installed %s (%s)\n  deployment: %s\n  kernel arguments: %s\n", rep.Image, rep.ManifestDigest, rep.Deployment, strings.Join(rep.Kargs, " "))
	}
	return nil
}

// Execute runs the command line and returns the process exit code. A
// failure is reported to the progress sinks as an error event (with the
// exit code and the stable code string) before it is printed.
func Execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	sess := &session{}
	root := newRoot(sess)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		sess.close()
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
	sess.emit(event.Event{Type: event.ErrorEv, Msg: err.Error(), Code: kind.String(), ExitCode: kind.ExitCode(), Hint: errs.HintOf(err)})
	sess.close()
	if !sess.stderrJSON {
		fmt.Fprintf(stderr, "error: %v\n", err)
	}
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
