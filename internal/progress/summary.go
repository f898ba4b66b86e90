package progress

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
)

// phaseOrder is the order in which installs run their phases; phases not
// listed sort after them by name.
var phaseOrder = []string{"resolve", "storage", "fetch", "assemble", "inspect", "deploy", "bootloader", "finalize"}

// summary is what the terminal shows of a result event. It reads the
// report through its JSON field names (docs/progress.md), so this package
// does not depend on the install package.
type summary struct {
	Image          string            `json:"image"`
	ManifestDigest string            `json:"manifest-digest"`
	TargetImage    string            `json:"target-image"`
	Stateroot      string            `json:"stateroot"`
	Deployment     string            `json:"deployment"`
	Kargs          []string          `json:"kargs"`
	Bootloader     string            `json:"bootloader"`
	Device         string            `json:"device"`
	Filesystem     string            `json:"filesystem"`
	Phases         map[string]string `json:"phase-durations"`
	Warnings       []string          `json:"warnings"`
	Plan           json.RawMessage   `json:"plan"`
	DryRun         bool              `json:"-"`
}

func summaryOf(data any) summary {
	var s summary
	b, err := json.Marshal(data)
	if err != nil {
		return s
	}
	_ = json.Unmarshal(b, &s)
	s.DryRun = s.Deployment == "" && len(s.Plan) > 0 && string(s.Plan) != "null"
	return s
}

func (s summary) phaseOrder() []string {
	rank := map[string]int{}
	for i, p := range phaseOrder {
		rank[p] = i + 1
	}
	var out []string
	for p := range s.Phases {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		ri, rj := rank[out[i]], rank[out[j]]
		if ri == 0 {
			ri = len(phaseOrder) + 1
		}
		if rj == 0 {
			rj = len(phaseOrder) + 1
		}
		if ri != rj {
			return ri < rj
		}
		return out[i] < out[j]
	})
	return out
}

// write prints the summary block the terminal ends with.
func (s summary) write(w io.Writer) {
	if s.DryRun {
		fmt.Fprintf(w, "Dry run of %s: nothing was written; the plan is on stdout.\n", s.Image)
		return
	}
	fmt.Fprintf(w, "Installed %s\n", s.Image)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "  %-14s %s\n", k+":", v)
		}
	}
	row("digest", s.ManifestDigest)
	if s.TargetImage != "" && s.TargetImage != s.Image {
		row("updates from", s.TargetImage)
	}
	row("device", s.Device)
	row("filesystem", s.Filesystem)
	row("deployment", s.Deployment)
	row("bootloader", s.Bootloader)
	row("kargs", strings.Join(s.Kargs, " "))
	if len(s.Phases) > 0 {
		var parts []string
		for _, p := range s.phaseOrder() {
			parts = append(parts, p+" "+s.Phases[p])
		}
		row("phases", strings.Join(parts, ", "))
	}
	for _, warn := range s.Warnings {
		row("warning", warn)
	}
}
