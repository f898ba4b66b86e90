// Package progress renders the install event stream: progress bars on a
// terminal, plain lines for logs, or JSON lines for programs
// (docs/progress.md).
package progress

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/bootlace/bootlace/internal/event"
)

// SchemaVersion is the version of the JSON-lines event schema
// (docs/progress.md). It changes only when a field changes meaning or goes
// away; new fields and event types do not bump it.
const SchemaVersion = 1

// monotonic filters progress so that, per phase and item, done never goes
// down and is never repeated. A fetch retry restarts a blob at zero; its
// events are held back until they pass the best value already reported.
type monotonic struct {
	last map[[2]string]int64
}

// pass reports whether e should be shown. Non-progress events always pass.
func (m *monotonic) pass(e event.Event) bool {
	if e.Type != event.Progress {
		return true
	}
	if m.last == nil {
		m.last = map[[2]string]int64{}
	}
	k := [2]string{e.Phase, e.Item}
	if last, seen := m.last[k]; seen && e.Done <= last {
		return false
	}
	m.last[k] = e.Done
	return true
}

// JSON writes one JSON object per event, each with the schema version "v".
type JSON struct {
	mu   sync.Mutex
	w    io.Writer
	mono monotonic
}

// NewJSON returns a JSON-lines sink on w.
func NewJSON(w io.Writer) *JSON { return &JSON{w: w} }

// Emit implements event.Sink.
func (j *JSON) Emit(e event.Event) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.mono.pass(e) {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	rec := struct {
		V int `json:"v"`
		event.Event
	}{SchemaVersion, e}
	b, err := json.Marshal(rec)
	if err != nil {
		// Data that cannot be marshalled must not cost the event itself.
		rec.Data = nil
		if b, err = json.Marshal(rec); err != nil {
			return
		}
	}
	b = append(b, '\n')
	// One Write per line so concurrent readers never see half a line.
	_, _ = j.w.Write(b)
}

// Level selects how much the Lines sink prints.
type Level int

const (
	// Quiet prints warnings only (errors are printed by the caller).
	Quiet Level = iota
	// Normal prints phases, messages, warnings and throttled byte progress.
	Normal
	// Verbose prints every progress event and the phase timings at the end.
	Verbose
)

// Lines writes human-readable lines, for logs, CI and the journal: phase
// boundaries with durations, messages, warnings, and byte progress at most
// every few seconds per item.
type Lines struct {
	mu       sync.Mutex
	w        io.Writer
	level    Level
	interval time.Duration
	mono     monotonic
	last     map[[2]string]time.Time
	started  map[string]time.Time
	first    time.Time
}

// NewLines returns a plain-text sink on w.
func NewLines(w io.Writer, level Level) *Lines {
	return &Lines{w: w, level: level, interval: 3 * time.Second,
		last: map[[2]string]time.Time{}, started: map[string]time.Time{}}
}

// Emit implements event.Sink.
func (l *Lines) Emit(e event.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.mono.pass(e) {
		return
	}
	if e.Type == event.Warning {
		fmt.Fprintf(l.w, "warning: %s\n", e.Msg)
		return
	}
	if l.level == Quiet {
		return
	}
	switch e.Type {
	case event.PhaseStart:
		if l.first.IsZero() {
			l.first = e.Time
		}
		l.started[e.Phase] = e.Time
		fmt.Fprintf(l.w, "==> %s\n", e.Phase)
	case event.PhaseEnd:
		if st, ok := l.started[e.Phase]; ok {
			fmt.Fprintf(l.w, "    %s done in %s\n", e.Phase, roundDuration(e.Time.Sub(st)))
		}
	case event.Message:
		fmt.Fprintf(l.w, "    %s\n", e.Msg)
	case event.Progress:
		k := [2]string{e.Phase, e.Item}
		final := e.Total > 0 && e.Done >= e.Total
		if l.level < Verbose && !final && e.Time.Sub(l.last[k]) < l.interval {
			return
		}
		l.last[k] = e.Time
		fmt.Fprintf(l.w, "    %s %s %s\n", e.Phase, shortItem(e.Item), byteCount(e.Done, e.Total))
	case event.Result:
		s := summaryOf(e.Data)
		switch {
		case s.DryRun:
			fmt.Fprintf(l.w, "==> dry run finished in %s: nothing was written\n", roundDuration(e.Time.Sub(l.first)))
		default:
			fmt.Fprintf(l.w, "==> installed %s in %s\n", s.Image, roundDuration(e.Time.Sub(l.first)))
		}
		if l.level == Verbose {
			for _, p := range s.phaseOrder() {
				fmt.Fprintf(l.w, "    %-10s %s\n", p, s.Phases[p])
			}
		}
	}
}

// shortItem shortens a digest to algorithm and 12 hex digits, as people
// know them from container tools; other items (image names) stay whole.
func shortItem(item string) string {
	alg, hex, ok := strings.Cut(item, ":")
	if !ok || len(hex) <= 12 || strings.Trim(hex, "0123456789abcdef") != "" || strings.ContainsAny(alg, "/.") {
		return item
	}
	return alg + ":" + hex[:12]
}

// byteCount formats done of total bytes, with a percentage when the total
// is known.
func byteCount(done, total int64) string {
	if total <= 0 {
		return humanBytes(done)
	}
	return fmt.Sprintf("%s / %s (%d%%)", humanBytes(done), humanBytes(total), done*100/total)
}

// humanBytes formats n in binary units with one decimal.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

func roundDuration(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}
