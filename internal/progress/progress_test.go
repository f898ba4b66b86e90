package progress

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bootlace/bootlace/internal/event"
	"github.com/vbauerster/mpb/v8"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func at(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }

// report is what a result event carries, by its JSON names.
var report = map[string]any{
	"image": "oci-archive:/os.tar", "manifest-digest": "sha256:abc", "target-image": "docker://quay.io/x/os:1",
	"deployment": "/ostree/deploy/default/deploy/c0ffee.0", "kargs": []string{"root=UUID=1", "rw"},
	"bootloader": "grub", "device": "/dev/vdb", "filesystem": "xfs",
	"phase-durations": map[string]string{"fetch": "2s", "resolve": "1s", "deploy": "3s"},
}

func TestJSON(t *testing.T) {
	tests := []struct {
		name   string
		in     []event.Event
		want   []string // JSON objects, compared as parsed values
		stamps bool     // zero times must be stamped
	}{
		{
			name: "fields and version",
			in: []event.Event{
				{Type: event.PhaseStart, Time: t0, Phase: "fetch", Weight: 0.3},
				{Type: event.ErrorEv, Time: t0, Phase: "fetch", Msg: "boom", Code: "fetch-failed", ExitCode: 5, Hint: "retry"},
			},
			want: []string{
				`{"v":1,"type":"phase-start","time":"2026-01-02T03:04:05Z","phase":"fetch","weight":0.3}`,
				`{"v":1,"type":"error","time":"2026-01-02T03:04:05Z","phase":"fetch","message":"boom","code":"fetch-failed","exit-code":5,"hint":"retry"}`,
			},
		},
		{
			name: "progress never goes back nor repeats per phase and item",
			in: []event.Event{
				{Type: event.Progress, Time: t0, Phase: "fetch", Item: "a", Done: 10, Total: 100},
				{Type: event.Progress, Time: t0, Phase: "fetch", Item: "a", Done: 10, Total: 100},
				{Type: event.Progress, Time: t0, Phase: "fetch", Item: "a", Done: 0, Total: 100}, // a retry restarts
				{Type: event.Progress, Time: t0, Phase: "fetch", Item: "b", Done: 5, Total: 5},
				{Type: event.Progress, Time: t0, Phase: "fetch", Item: "a", Done: 100, Total: 100},
				{Type: event.Progress, Time: t0, Phase: "assemble", Item: "a", Done: 1, Total: 100},
			},
			want: []string{
				`{"v":1,"type":"progress","time":"2026-01-02T03:04:05Z","phase":"fetch","item":"a","done":10,"total":100}`,
				`{"v":1,"type":"progress","time":"2026-01-02T03:04:05Z","phase":"fetch","item":"b","done":5,"total":5}`,
				`{"v":1,"type":"progress","time":"2026-01-02T03:04:05Z","phase":"fetch","item":"a","done":100,"total":100}`,
				`{"v":1,"type":"progress","time":"2026-01-02T03:04:05Z","phase":"assemble","item":"a","done":1,"total":100}`,
			},
		},
		{
			name: "data that cannot be encoded is dropped, not the event",
			in:   []event.Event{{Type: event.Result, Time: t0, Data: make(chan int)}},
			want: []string{`{"v":1,"type":"result","time":"2026-01-02T03:04:05Z"}`},
		},
		{
			name:   "zero time is stamped",
			in:     []event.Event{{Type: event.Message, Msg: "hi"}},
			stamps: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			j := NewJSON(&buf)
			for _, e := range tt.in {
				j.Emit(e)
			}
			lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
			if tt.stamps {
				var got struct{ Time time.Time }
				if err := json.Unmarshal([]byte(lines[0]), &got); err != nil || time.Since(got.Time) > time.Minute {
					t.Fatalf("time not stamped: %s (%v)", lines[0], err)
				}
				return
			}
			if len(lines) != len(tt.want) {
				t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(tt.want), buf.String())
			}
			for i := range lines {
				var got, want any
				if err := json.Unmarshal([]byte(lines[i]), &got); err != nil {
					t.Fatalf("line %d: %v", i, err)
				}
				_ = json.Unmarshal([]byte(tt.want[i]), &want)
				g, _ := json.Marshal(got)
				w, _ := json.Marshal(want)
				if !bytes.Equal(g, w) {
					t.Errorf("line %d:\n got %s\nwant %s", i, g, w)
				}
			}
		})
	}
}

func TestLines(t *testing.T) {
	install := []event.Event{
		{Type: event.PhaseStart, Time: at(0), Phase: "fetch", Weight: 0.3},
		{Type: event.Progress, Time: at(0.1), Phase: "fetch", Item: "sha256:0123456789abcdef0123", Done: 1 << 20, Total: 4 << 20},
		{Type: event.Progress, Time: at(0.2), Phase: "fetch", Item: "sha256:0123456789abcdef0123", Done: 2 << 20, Total: 4 << 20},
		{Type: event.Progress, Time: at(0.3), Phase: "fetch", Item: "sha256:0123456789abcdef0123", Done: 1 << 20, Total: 4 << 20},
		{Type: event.Progress, Time: at(4), Phase: "fetch", Item: "sha256:0123456789abcdef0123", Done: 3 << 20, Total: 4 << 20},
		{Type: event.Progress, Time: at(4.1), Phase: "fetch", Item: "sha256:0123456789abcdef0123", Done: 4 << 20, Total: 4 << 20},
		{Type: event.Warning, Time: at(4.2), Phase: "fetch", Msg: "slow mirror"},
		{Type: event.Message, Time: at(4.3), Phase: "fetch", Msg: "all blobs fetched"},
		{Type: event.PhaseEnd, Time: at(4.5), Phase: "fetch"},
		{Type: event.Result, Time: at(5), Data: report},
	}
	tests := []struct {
		level Level
		want  string
	}{
		{Quiet, "warning: slow mirror\n"},
		{Normal, `==> fetch
    fetch sha256:0123456789ab 1.0 MiB / 4.0 MiB (25%)
    fetch sha256:0123456789ab 3.0 MiB / 4.0 MiB (75%)
    fetch sha256:0123456789ab 4.0 MiB / 4.0 MiB (100%)
warning: slow mirror
    all blobs fetched
    fetch done in 4.5s
==> installed oci-archive:/os.tar in 5s
`},
		{Verbose, `==> fetch
    fetch sha256:0123456789ab 1.0 MiB / 4.0 MiB (25%)
    fetch sha256:0123456789ab 2.0 MiB / 4.0 MiB (50%)
    fetch sha256:0123456789ab 3.0 MiB / 4.0 MiB (75%)
    fetch sha256:0123456789ab 4.0 MiB / 4.0 MiB (100%)
warning: slow mirror
    all blobs fetched
    fetch done in 4.5s
==> installed oci-archive:/os.tar in 5s
    resolve    1s
    fetch      2s
    deploy     3s
`},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		l := NewLines(&buf, tt.level)
		for _, e := range install {
			l.Emit(e)
		}
		if got := buf.String(); got != tt.want {
			t.Errorf("level %d:\n got:\n%s\nwant:\n%s", tt.level, got, tt.want)
		}
	}
}

func TestLinesDryRun(t *testing.T) {
	var buf bytes.Buffer
	l := NewLines(&buf, Normal)
	l.Emit(event.Event{Type: event.PhaseStart, Time: at(0), Phase: "resolve"})
	l.Emit(event.Event{Type: event.Result, Time: at(1), Data: map[string]any{"image": "x", "plan": map[string]any{"version": 1}}})
	if !strings.Contains(buf.String(), "dry run finished in 1s: nothing was written") {
		t.Errorf("dry run result: %q", buf.String())
	}
}

func TestHumanBytes(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"},
		{201317148, "192.0 MiB"}, {5 << 30, "5.0 GiB"}, {3 << 40, "3.0 TiB"},
	}
	for _, tt := range tests {
		if got := humanBytes(tt.n); got != tt.want {
			t.Errorf("humanBytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestSummary(t *testing.T) {
	var buf bytes.Buffer
	summaryOf(report).write(&buf)
	want := `Installed oci-archive:/os.tar
  digest:        sha256:abc
  updates from:  docker://quay.io/x/os:1
  device:        /dev/vdb
  filesystem:    xfs
  deployment:    /ostree/deploy/default/deploy/c0ffee.0
  bootloader:    grub
  kargs:         root=UUID=1 rw
  phases:        resolve 1s, fetch 2s, deploy 3s
`
	if buf.String() != want {
		t.Errorf("summary:\n%s\nwant:\n%s", buf.String(), want)
	}
}

// TestBars drives the terminal sink into a buffer (mpb draws into any
// writer when asked to refresh on its own) and checks the final frames.
func TestBars(t *testing.T) {
	run := []event.Event{
		{Type: event.PhaseStart, Phase: "resolve", Weight: 0.1},
		{Type: event.PhaseEnd, Phase: "resolve"},
		{Type: event.PhaseStart, Phase: "fetch", Weight: 0.9},
		{Type: event.Progress, Phase: "fetch", Item: "sha256:aaaaaaaaaaaaaaaaaaaa", Done: 1 << 20, Total: 2 << 20},
		{Type: event.Progress, Phase: "fetch", Item: "sha256:bbbbbbbbbbbbbbbbbbbb", Done: 1 << 20, Total: 1 << 20},
		{Type: event.Warning, Phase: "fetch", Msg: "slow mirror"},
	}
	tests := []struct {
		name string
		end  []event.Event
		want []string
		not  []string
	}{
		{
			name: "success ends with the summary",
			end: []event.Event{
				{Type: event.Progress, Phase: "fetch", Item: "sha256:aaaaaaaaaaaaaaaaaaaa", Done: 2 << 20, Total: 2 << 20},
				{Type: event.PhaseEnd, Phase: "fetch"},
				{Type: event.Result, Data: report},
			},
			want: []string{"install", "100 %", `resolve\s+✓`, `fetch\s+✓ +3.0 MiB / 3.0 MiB`, "warning: slow mirror", "Installed oci-archive:/os.tar", "phases:"},
			not:  []string{"failed"},
		},
		{
			name: "an error marks the running phase failed",
			end:  []event.Event{{Type: event.ErrorEv, Msg: "boom", Code: "fetch-failed", ExitCode: 5}},
			want: []string{`install\s+failed`, `resolve\s+✓`, `fetch\s+✗`},
			not:  []string{"Installed"},
		},
		{
			name: "close without an end event stops the bars",
			want: []string{`install\s+failed`, `fetch\s+✗`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			b := newBars(&buf, false, mpb.WithAutoRefresh())
			for _, e := range append(append([]event.Event(nil), run...), tt.end...) {
				e.Time = time.Now()
				b.Emit(e)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			_ = b.Close()
			b.Emit(event.Event{Type: event.Progress, Phase: "fetch", Item: "late", Done: 1})
			out := buf.String()
			for _, w := range tt.want {
				if !regexp.MustCompile(w).MatchString(out) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
			if strings.Contains(tt.name, "success") && !strings.HasSuffix(out, "phases:        resolve 1s, fetch 2s, deploy 3s\n") {
				t.Errorf("output does not end with the summary:\n%s", out)
			}
		})
	}
}

// TestBarsBounds checks the layout rules that keep big images readable:
// at most maxItemBars item bars, and an assemble phase that knows every
// layer's size from fetch, so a small layer finishing first does not
// push the overall bar ahead.
func TestBarsBounds(t *testing.T) {
	var buf bytes.Buffer
	b := newBars(&buf, false, mpb.WithAutoRefresh())
	defer b.Close()
	emit := func(e event.Event) {
		e.Time = time.Now()
		b.Emit(e)
	}
	emit(event.Event{Type: event.PhaseStart, Phase: "fetch", Weight: 0.5})
	for i := range 10 {
		emit(event.Event{Type: event.Progress, Phase: "fetch", Item: fmt.Sprintf("sha256:%040d", i), Done: 1, Total: 100})
	}
	if n := b.activeItems(b.find("fetch")); n != maxItemBars {
		t.Errorf("%d item bars, want %d", n, maxItemBars)
	}
	emit(event.Event{Type: event.Progress, Phase: "fetch", Item: "sha256:big", Done: 0, Total: 100000})
	for i := range 10 {
		emit(event.Event{Type: event.Progress, Phase: "fetch", Item: fmt.Sprintf("sha256:%040d", i), Done: 100, Total: 100})
	}
	emit(event.Event{Type: event.Progress, Phase: "fetch", Item: "sha256:big", Done: 100000, Total: 100000})
	emit(event.Event{Type: event.PhaseEnd, Phase: "fetch"})
	emit(event.Event{Type: event.PhaseStart, Phase: "assemble", Weight: 0.5})
	emit(event.Event{Type: event.Progress, Phase: "assemble", Item: "sha256:0000000000000000000000000000000000000000", Done: 100, Total: 100})
	b.mu.Lock()
	got := b.overallCur
	b.mu.Unlock()
	// fetch done (500) plus 100 of 101000 bytes of assemble's half.
	if got < 500 || got > 501 {
		t.Errorf("overall at %d/1000 after the first small layer, want about 500", got)
	}
}

func TestShortItem(t *testing.T) {
	for in, want := range map[string]string{
		"sha256:0123456789abcdef0123456789abcdef": "sha256:0123456789ab",
		"sha256:0123":                          "sha256:0123",
		"localhost:5000/bootlace/app-a:latest": "localhost:5000/bootlace/app-a:latest",
		"quay.io/example/app:1234567890abcdef": "quay.io/example/app:1234567890abcdef",
		"layer":                                "layer",
	} {
		if got := shortItem(in); got != want {
			t.Errorf("shortItem(%q) = %q, want %q", in, got, want)
		}
	}
}
