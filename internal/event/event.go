// Package event is the single stream through which every install phase
// reports progress. Phases never print; sinks (terminal bars, plain lines,
// JSON lines) render events.
package event

import (
	"io"
	"sync"
	"time"
)

// Type names an event kind. The strings are part of the JSON-lines schema.
type Type string

const (
	PhaseStart Type = "phase-start"
	PhaseEnd   Type = "phase-end"
	Progress   Type = "progress"
	Message    Type = "message"
	Warning    Type = "warning"
	Result     Type = "result"
	ErrorEv    Type = "error"
)

// Event is one progress report. Fields unused by a type are left zero.
type Event struct {
	Type  Type      `json:"type"`
	Time  time.Time `json:"time"`
	Phase string    `json:"phase,omitempty"`
	// Weight is the phase's share of the whole install (phase-start only).
	Weight float64 `json:"weight,omitempty"`
	// Item names what Progress counts: a layer digest, a bound image, a file.
	Item  string `json:"item,omitempty"`
	Done  int64  `json:"done,omitempty"`
	Total int64  `json:"total,omitempty"`
	Msg   string `json:"message,omitempty"`
	// Error fields, for ErrorEv.
	Code     string `json:"code,omitempty"`
	ExitCode int    `json:"exit-code,omitempty"`
	// Hint says what the user can do about the error.
	Hint string `json:"hint,omitempty"`
	// Data carries the final report (Result) or phase details.
	Data any `json:"data,omitempty"`
}

// Sink receives events. Implementations must be safe for concurrent use.
type Sink interface {
	Emit(Event)
}

// Discard drops every event.
type Discard struct{}

// Emit implements Sink.
func (Discard) Emit(Event) {}

// Func adapts a function to a Sink.
type Func func(Event)

// Emit implements Sink.
func (f Func) Emit(e Event) { f(e) }

// Multi fans events out to several sinks.
type Multi []Sink

// Emit implements Sink.
func (m Multi) Emit(e Event) {
	for _, s := range m {
		s.Emit(e)
	}
}

// Recorder keeps every event; tests use it.
type Recorder struct {
	mu     sync.Mutex
	events []Event
}

// Emit implements Sink.
func (r *Recorder) Emit(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

// Events returns a copy of what was recorded.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// Emitter stamps times and phase names so phases can report tersely.
type Emitter struct {
	Sink  Sink
	Phase string
}

func (em Emitter) emit(e Event) {
	if em.Sink == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if e.Phase == "" {
		e.Phase = em.Phase
	}
	em.Sink.Emit(e)
}

// Start reports the beginning of the emitter's phase.
func (em Emitter) Start(weight float64) { em.emit(Event{Type: PhaseStart, Weight: weight}) }

// End reports the end of the emitter's phase.
func (em Emitter) End() { em.emit(Event{Type: PhaseEnd}) }

// Progress reports done of total bytes (or items) for item.
func (em Emitter) Progress(item string, done, total int64) {
	em.emit(Event{Type: Progress, Item: item, Done: done, Total: total})
}

// Info reports a human-readable detail.
func (em Emitter) Info(msg string) { em.emit(Event{Type: Message, Msg: msg}) }

// Warn reports something the user should know about but that does not stop the install.
func (em Emitter) Warn(msg string) { em.emit(Event{Type: Warning, Msg: msg}) }

// ProgressReader counts the bytes read through it and reports them as
// Progress events for Item, at most every 200 ms and once more when the
// underlying reader returns an error or EOF.
type ProgressReader struct {
	R     io.Reader
	Em    Emitter
	Item  string
	Done  int64
	Total int64
	last  time.Time
}

// Read implements io.Reader.
func (p *ProgressReader) Read(b []byte) (int, error) {
	n, err := p.R.Read(b)
	p.Done += int64(n)
	if now := time.Now(); err != nil || now.Sub(p.last) > 200*time.Millisecond {
		p.last = now
		p.Em.Progress(p.Item, p.Done, p.Total)
	}
	return n, err
}
