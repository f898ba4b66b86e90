package progress

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bootlace/bootlace/internal/event"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// overallUnits is the resolution of the overall bar.
const overallUnits = 1000

// Bars draws progress bars on a terminal: one overall bar weighted by the
// phases' weights, one line per phase (a spinner while it runs, its
// duration once done) and, while a phase reports bytes, one bar per item
// with its byte counts and rate. A result event ends the display with a
// summary of the install; an error event marks the running phase failed.
type Bars struct {
	mu      sync.Mutex
	out     io.Writer
	p       *mpb.Progress
	verbose bool
	mono    monotonic

	start      time.Time
	overall    *mpb.Bar
	overallCur int64
	doneWeight float64
	running    []*phaseBars // in start order; fetch and assemble overlap
	ended      []*phaseBars
	closed     bool
}

type phaseBars struct {
	name   string
	weight float64
	bar    *mpb.Bar
	start  time.Time
	items  map[string]*itemBar
	// The decorator reads these while Emit writes them; atomics keep the
	// drawing goroutines off the sink's lock.
	end         atomic.Int64 // UnixNano, 0 while running
	done, total atomic.Int64
	// count items seen, finished those done.
	count, finished atomic.Int64
}

type itemBar struct {
	bar         *mpb.Bar
	done, total int64
}

// NewBars returns a terminal sink drawing on w, which should be a terminal.
// verbose also prints the phases' messages above the bars.
func NewBars(w io.Writer, verbose bool) *Bars {
	return newBars(w, verbose)
}

func newBars(w io.Writer, verbose bool, opts ...mpb.ContainerOption) *Bars {
	opts = append([]mpb.ContainerOption{mpb.WithOutput(w), mpb.WithWidth(32), mpb.WithRefreshRate(120 * time.Millisecond)}, opts...)
	return &Bars{out: w, p: mpb.New(opts...), verbose: verbose}
}

// Emit implements event.Sink.
func (b *Bars) Emit(e event.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		if e.Type == event.Warning {
			fmt.Fprintf(b.out, "warning: %s\n", e.Msg)
		}
		return
	}
	if !b.mono.pass(e) {
		return
	}
	if b.overall == nil {
		b.start = e.Time
		b.overall = b.p.AddBar(overallUnits,
			mpb.PrependDecorators(decor.Name("install", decor.WC{W: 12, C: decor.DindentRight})),
			mpb.AppendDecorators(decor.Percentage(decor.WC{W: 5}), decor.Any(func(decor.Statistics) string {
				return " " + time.Since(b.start).Round(time.Second).String()
			})),
			mpb.BarFillerOnAbort("failed"))
	}
	switch e.Type {
	case event.PhaseStart:
		if b.find(e.Phase) == nil {
			b.startPhase(e)
		}
	case event.PhaseEnd:
		if ph := b.find(e.Phase); ph != nil {
			b.endPhase(ph, e.Time)
		}
	case event.Progress:
		b.progress(e)
	case event.Message:
		if b.verbose {
			fmt.Fprintf(b.p, "  %s: %s\n", e.Phase, e.Msg)
		}
	case event.Warning:
		fmt.Fprintf(b.p, "warning: %s\n", e.Msg)
	case event.Result:
		for len(b.running) > 0 {
			b.endPhase(b.running[0], e.Time)
		}
		b.overall.SetCurrent(overallUnits)
		b.shutdown()
		summaryOf(e.Data).write(b.out)
	case event.ErrorEv:
		b.abort()
	}
}

// Close stops the display, marking whatever still runs as failed. It is
// safe to call more than once and after a result or error event.
func (b *Bars) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.abort()
	}
	return nil
}

func (b *Bars) startPhase(e event.Event) {
	ph := &phaseBars{name: e.Phase, weight: e.Weight, start: e.Time, items: map[string]*itemBar{}}
	ph.bar = b.p.New(0, mpb.SpinnerStyle("-", "\\", "|", "/"),
		mpb.BarWidth(1),
		mpb.PrependDecorators(decor.Name(e.Phase, decor.WC{W: 12, C: decor.DindentRight})),
		mpb.AppendDecorators(decor.Any(func(decor.Statistics) string { return phaseDetail(ph) })),
		mpb.BarFillerOnComplete("✓"),
		mpb.BarFillerOnAbort("✗"))
	b.seed(ph)
	b.running = append(b.running, ph)
}

// find returns the running phase called name, or nil.
func (b *Bars) find(name string) *phaseBars {
	for _, ph := range b.running {
		if ph.name == name {
			return ph
		}
	}
	return nil
}

// itemNoun names what a phase's progress items are.
func itemNoun(phase string) string {
	if phase == "bound-images" {
		return "images"
	}
	return "layers"
}

// phaseDetail is the text after a phase's spinner: bytes while items
// report them, then the phase's duration.
func phaseDetail(ph *phaseBars) string {
	end := time.Now()
	if n := ph.end.Load(); n != 0 {
		end = time.Unix(0, n)
	}
	d := roundDuration(end.Sub(ph.start))
	if total := ph.total.Load(); total > 0 {
		return fmt.Sprintf(" %s  %d/%d %s  %s", byteCount(ph.done.Load(), total), ph.finished.Load(), ph.count.Load(), itemNoun(ph.name), d)
	}
	return " " + d.String()
}

func (b *Bars) endPhase(ph *phaseBars, t time.Time) {
	for i, r := range b.running {
		if r == ph {
			b.running = append(b.running[:i], b.running[i+1:]...)
			break
		}
	}
	ph.end.Store(t.UnixNano())
	for _, it := range ph.items {
		if it.bar != nil {
			it.bar.SetTotal(-1, true)
			it.bar = nil
		}
	}
	ph.bar.SetTotal(-1, true)
	b.doneWeight += ph.weight
	b.ended = append(b.ended, ph)
	b.updateOverall()
}

// maxItemBars bounds the per-item bars on screen; images with dozens of
// layers would otherwise scroll the bars off a terminal.
const maxItemBars = 6

// seededFrom names, for phases that count the same items as an earlier
// phase, that phase: assemble reads the layers fetch wrote, so its totals
// are known from the start and the overall bar does not jump when small
// layers finish first.
var seededFrom = map[string]string{"assemble": "fetch"}

func (b *Bars) seed(ph *phaseBars) {
	src := seededFrom[ph.name]
	for _, prev := range append(append([]*phaseBars(nil), b.ended...), b.running...) {
		if prev.name != src {
			continue
		}
		for item, it := range prev.items {
			ph.items[item] = &itemBar{total: it.total}
			ph.total.Add(it.total)
		}
	}
	ph.count.Store(int64(len(ph.items)))
}

func (b *Bars) progress(e event.Event) {
	ph := b.find(e.Phase)
	if ph == nil {
		return
	}
	it := ph.items[e.Item]
	if it == nil {
		it = &itemBar{}
		ph.items[e.Item] = it
		ph.count.Add(1)
	}
	if e.Total > 0 && e.Total != it.total {
		ph.total.Add(e.Total - it.total)
		it.total = e.Total
		if it.bar != nil {
			it.bar.SetTotal(e.Total, false)
		}
	}
	ph.done.Add(e.Done - it.done)
	wasDone := it.total > 0 && it.done >= it.total
	it.done = e.Done
	finished := it.total > 0 && it.done >= it.total
	if finished && !wasDone {
		ph.finished.Add(1)
	}
	// A bar only for items that are under way: announced (done 0) and
	// already-present (done = total at once) items have nothing to show.
	if it.bar == nil && !finished && e.Done > 0 && b.activeItems(ph) < maxItemBars {
		it.bar = b.p.AddBar(it.total, mpb.BarRemoveOnComplete(),
			mpb.PrependDecorators(decor.Name("  "+shortItem(e.Item), decor.WC{W: 24, C: decor.DindentRight})),
			mpb.AppendDecorators(
				decor.Counters(decor.SizeB1024(0), "% .1f / % .1f", decor.WC{W: 22}),
				decor.AverageSpeed(decor.SizeB1024(0), "% .1f", decor.WC{W: 14})))
	}
	if it.bar != nil {
		it.bar.SetCurrent(e.Done)
		if finished {
			it.bar.SetTotal(-1, true)
			it.bar = nil
		}
	}
	b.updateOverall()
}

// updateOverall sets the overall bar from the ended phases' weights and
// the running phases' byte fractions.
func (b *Bars) updateOverall() {
	w := b.doneWeight
	for _, ph := range b.running {
		if total := ph.total.Load(); total > 0 {
			w += ph.weight * min(float64(ph.done.Load())/float64(total), 1)
		}
	}
	b.setOverall(w)
}

func (b *Bars) activeItems(ph *phaseBars) int {
	n := 0
	for _, it := range ph.items {
		if it.bar != nil {
			n++
		}
	}
	return n
}

// setOverall moves the overall bar forward; it never goes back, and it
// completes only with the result.
func (b *Bars) setOverall(frac float64) {
	v := int64(frac * overallUnits)
	if v >= overallUnits {
		v = overallUnits - 1
	}
	if v > b.overallCur {
		b.overallCur = v
		b.overall.SetCurrent(v)
	}
}

// abort marks the running phases and the overall bar failed and stops.
func (b *Bars) abort() {
	if b.closed {
		return
	}
	for _, ph := range b.running {
		ph.end.Store(time.Now().UnixNano())
		for _, it := range ph.items {
			if it.bar != nil {
				it.bar.Abort(true)
			}
		}
		ph.bar.Abort(false)
	}
	if b.overall != nil {
		b.overall.Abort(false)
	}
	b.shutdown()
}

// shutdown waits for the last frame to be drawn.
func (b *Bars) shutdown() {
	b.closed = true
	b.p.Wait()
}
