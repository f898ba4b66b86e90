package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// profileEnv names a file to write a CPU profile of the whole run to, for
// scripts/bench.sh and `go tool pprof`. An environment variable rather than a
// flag: it is a developer's tool, not part of the CLI, and it has to work for
// every subcommand without touching the command tree.
const profileEnv = "BOOTLACE_CPUPROFILE"

// startCPUProfile starts profiling into path; the returned function stops
// and flushes it. An empty path profiles nothing.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("creating CPU profile (%s): %w", profileEnv, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting CPU profile %s: %w", path, err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "warning: writing CPU profile %s: %v\n", path, err)
		}
	}, nil
}
