// Package progress renders the install event stream: plain lines for logs
// and terminals, or JSON lines for programs.
package progress

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/bootlace/bootlace/internal/event"
)

// SchemaVersion is the version of the JSON-lines event schema (docs/progress.md).
const SchemaVersion = 1

// JSON writes one JSON object per event.
type JSON struct {
	mu sync.Mutex
	w  io.Writer
}

// NewJSON returns a JSON-lines sink on w.
func NewJSON(w io.Writer) *JSON { return &JSON{w: w} }

// Emit implements event.Sink.
func (j *JSON) Emit(e event.Event) {
	j.mu.Lock()
	defer j.mu.Unlock()
	rec := struct {
		V int `json:"v"`
		event.Event
	}{SchemaVersion, e}
	b, err := json.Marshal(rec)
	if err != nil {
		return
	}
	b = append(b, '\n')
	_, _ = j.w.Write(b)
}

// Lines writes human-readable lines: phase boundaries, messages, warnings,
// and byte progress at most every few seconds per item.
type Lines struct {
	mu      sync.Mutex
	w       io.Writer
	Verbose bool
	last    map[string]time.Time
}

// NewLines returns a plain-text sink on w.
func NewLines(w io.Writer, verbose bool) *Lines {
	return &Lines{w: w, Verbose: verbose, last: map[string]time.Time{}}
}

// Emit implements event.Sink.
func (l *Lines) Emit(e event.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch e.Type {
	case event.PhaseStart:
		fmt.Fprintf(l.w, "==> %s\n", e.Phase)
	case event.Message:
		fmt.Fprintf(l.w, "    %s\n", e.Msg)
	case event.Warning:
		fmt.Fprintf(l.w, "warning: %s\n", e.Msg)
	case event.Progress:
		if !l.Verbose && e.Done != e.Total {
			if time.Since(l.last[e.Item]) < 3*time.Second {
				return
			}
		}
		l.last[e.Item] = time.Now()
		item := e.Item
		if len(item) > 19 {
			item = item[:19]
		}
		if e.Total > 0 {
			fmt.Fprintf(l.w, "    %s %s: %d/%d MiB\n", e.Phase, item, e.Done>>20, e.Total>>20)
		} else {
			fmt.Fprintf(l.w, "    %s %s: %d MiB\n", e.Phase, item, e.Done>>20)
		}
	case event.ErrorEv:
		fmt.Fprintf(l.w, "error: %s\n", e.Msg)
	}
}
