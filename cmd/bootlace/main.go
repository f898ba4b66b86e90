// Command bootlace installs bootable container images.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/bootlace/bootlace/internal/cli"
	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/hostenv"
	"github.com/bootlace/bootlace/internal/privatens"
	"github.com/bootlace/bootlace/internal/sandbox"
	"github.com/sirupsen/logrus"
	"go.podman.io/storage/pkg/reexec"
)

func main() {
	// The sandbox helper and containers/storage re-execute this binary;
	// both must get control before anything else runs.
	if sandbox.Init() {
		return
	}
	if reexec.Init() {
		return
	}
	reexeced, code, err := privatens.Enter()
	if err != nil {
		os.Exit(enterFailed(err))
	}
	if reexeced {
		os.Exit(code)
	}
	// Only here, in the process that does the work: the parent above just
	// waits for it, and both would write the same file.
	stopProfile, err := startCPUProfile(os.Getenv(profileEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	// containers/image logs retries and reconnects at info level; bootlace
	// reports what matters through its own events.
	logrus.SetLevel(logrus.WarnLevel)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code = cli.Execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	stopProfile()
	os.Exit(code)
}

// enterFailed reports a failure to enter the private mount namespace. In
// a container the cause is nearly always a missing privilege, so the
// container check's error, naming the podman flag, replaces the bare one.
func enterFailed(err error) int {
	if f, derr := hostenv.Detect("/", os.Getenv); derr == nil {
		if cerr := hostenv.Check(f, hostenv.Request{}); cerr != nil {
			fmt.Fprintf(os.Stderr, "error: %v\n", cerr)
			return errs.KindOf(cerr).ExitCode()
		}
	}
	fmt.Fprintln(os.Stderr, "error:", err)
	return 1
}
