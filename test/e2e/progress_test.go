package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// progressEvent is one line of the JSON-lines stream (docs/progress.md).
type progressEvent struct {
	V        int             `json:"v"`
	Type     string          `json:"type"`
	Time     time.Time       `json:"time"`
	Phase    string          `json:"phase"`
	Weight   float64         `json:"weight"`
	Item     string          `json:"item"`
	Done     int64           `json:"done"`
	Total    int64           `json:"total"`
	Message  string          `json:"message"`
	Code     string          `json:"code"`
	ExitCode int             `json:"exit-code"`
	Hint     string          `json:"hint"`
	Data     json.RawMessage `json:"data"`
}

// parseEvents reads a JSON-lines stream strictly: every line must be one
// event of a known type with the schema version.
func parseEvents(t *testing.T, stream []byte) []progressEvent {
	t.Helper()
	known := map[string]bool{"phase-start": true, "phase-end": true, "progress": true, "message": true, "warning": true, "result": true, "error": true}
	var evs []progressEvent
	sc := bufio.NewScanner(bytes.NewReader(stream))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for n := 1; sc.Scan(); n++ {
		var e progressEvent
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("progress line %d is not JSON: %v\n%s", n, err, sc.Text())
		}
		if e.V != 1 || !known[e.Type] || e.Time.IsZero() {
			t.Fatalf("progress line %d: version %d, type %q, time %v: not a v1 event\n%s", n, e.V, e.Type, e.Time, sc.Text())
		}
		evs = append(evs, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return evs
}

// runWithFD runs bootlace with an extra pipe as fd 3 and returns stdout,
// stderr, what arrived on fd 3, and the exit code.
func runWithFD(t *testing.T, args ...string) (stdout, stderr, fd3 []byte, code int) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bootlaceBin, args...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	cmd.ExtraFiles = []*os.File{w}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	got, _ := io.ReadAll(r)
	r.Close()
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return so.Bytes(), se.Bytes(), got, code
}

var installPhases = []string{"resolve", "storage", "fetch", "assemble", "inspect", "deploy", "bound-images", "bootloader", "finalize"}

// TestProgressJSONLines installs the bookworm fixture with --progress-fd 3
// and checks the stream against the install's own report: every phase
// starts and ends in order, byte counts only grow and end at the manifest's
// layer sizes in fetch and assemble, and one result event closes it.
func TestProgressJSONLines(t *testing.T) {
	requireRoot(t)
	archive := fixture(t, "bookworm")
	disk := sparseDisk(t, 8<<30)
	stdout, stderr, stream, code := runWithFD(t, "install", "to-disk", "--bound-images", "skip", "--via-loopback", "--progress-fd", "3", "--json",
		"--source-imgref", "oci-archive:"+archive, "--target-imgref", "quay.io/example/os:latest", disk)
	if code != 0 {
		t.Fatalf("install: exit %d\n%s", code, tail(string(stderr), 40))
	}
	var rep struct {
		ManifestDigest string `json:"manifest-digest"`
		Plan           struct {
			Image struct {
				Layers []struct {
					Digest string `json:"digest"`
					Size   int64  `json:"size"`
				} `json:"layers"`
			} `json:"image"`
		} `json:"plan"`
	}
	if err := json.Unmarshal(stdout, &rep); err != nil {
		t.Fatalf("--json report: %v\n%s", err, stdout)
	}
	layers := map[string]int64{}
	for _, l := range rep.Plan.Image.Layers {
		layers[l.Digest] = l.Size
	}
	if len(layers) == 0 {
		t.Fatalf("the report's plan lists no layers:\n%s", stdout)
	}
	evs := parseEvents(t, stream)
	t.Logf("%d events", len(evs))

	// Phases: each starts once, ends once, in install order. Only fetch and
	// assemble overlap (layers are applied as they arrive), and fetch ends
	// before assemble does.
	var started []string
	running := map[string]bool{}
	ended := map[string]bool{}
	weights := 0.0
	for _, e := range evs {
		switch e.Type {
		case "phase-start":
			for p := range running {
				if !(p == "fetch" && e.Phase == "assemble") {
					t.Errorf("phase %s starts while %s is running", e.Phase, p)
				}
			}
			running[e.Phase] = true
			started = append(started, e.Phase)
			weights += e.Weight
		case "phase-end":
			if !running[e.Phase] {
				t.Errorf("phase-end for %s, which is not running", e.Phase)
			}
			if e.Phase == "assemble" && !ended["fetch"] {
				t.Errorf("assemble ended before fetch")
			}
			delete(running, e.Phase)
			ended[e.Phase] = true
		}
	}
	for p := range running {
		t.Errorf("phase %s never ended", p)
	}
	if strings.Join(started, ",") != strings.Join(installPhases, ",") {
		t.Errorf("phases started: %v, want %v", started, installPhases)
	}
	if math.Abs(weights-1) > 0.001 {
		t.Errorf("phase weights add up to %v, want 1", weights)
	}

	// Bytes: monotonic per phase and item, a constant total equal to the
	// manifest's layer size, ending at that total.
	type key struct{ phase, item string }
	last := map[key]progressEvent{}
	for _, e := range evs {
		if e.Type != "progress" {
			continue
		}
		k := key{e.Phase, e.Item}
		if p, ok := last[k]; ok {
			if e.Done < p.Done {
				t.Errorf("%s %s: done went back from %d to %d", e.Phase, e.Item, p.Done, e.Done)
			}
			if e.Total != p.Total {
				t.Errorf("%s %s: total changed from %d to %d", e.Phase, e.Item, p.Total, e.Total)
			}
		}
		if e.Done > e.Total {
			t.Errorf("%s %s: done %d exceeds total %d", e.Phase, e.Item, e.Done, e.Total)
		}
		last[k] = e
	}
	for _, phase := range []string{"fetch", "assemble"} {
		for dg, size := range layers {
			e, ok := last[key{phase, dg}]
			switch {
			case !ok:
				t.Errorf("%s: no progress for layer %s", phase, dg)
			case e.Total != size || e.Done != size:
				t.Errorf("%s %s: ended at %d of %d, the manifest says %d bytes", phase, dg, e.Done, e.Total, size)
			}
		}
	}
	for k := range last {
		if _, ok := layers[k.item]; !ok && (k.phase == "fetch" || k.phase == "assemble") {
			t.Errorf("%s: progress for %s, which is not a layer of the manifest", k.phase, k.item)
		}
	}

	// Exactly one result, last, carrying the report.
	var results int
	for _, e := range evs {
		if e.Type == "result" {
			results++
		}
		if e.Type == "error" {
			t.Errorf("error event in a successful install: %s", e.Message)
		}
	}
	if results != 1 {
		t.Fatalf("%d result events, want 1", results)
	}
	final := evs[len(evs)-1]
	if final.Type != "result" {
		t.Fatalf("last event is %s, want result", final.Type)
	}
	var data struct {
		ManifestDigest string `json:"manifest-digest"`
		Deployment     string `json:"deployment"`
	}
	if err := json.Unmarshal(final.Data, &data); err != nil || data.ManifestDigest != rep.ManifestDigest || data.Deployment == "" {
		t.Errorf("result data %s does not match the report (digest %s, err %v)", final.Data, rep.ManifestDigest, err)
	}
}

// TestProgressJSONError checks the failure path: a disk too small for the
// layout ends the --progress json stream on stderr with an error event
// carrying the stable code and the exit code, and stderr holds nothing but
// JSON lines.
func TestProgressJSONError(t *testing.T) {
	requireRoot(t)
	archive := fixture(t, "bookworm")
	disk := sparseDisk(t, 256<<20)
	_, stderr, code := bootlaceRun(t, nil, "install", "to-disk", "--bound-images", "skip", "--via-loopback", "--progress", "json",
		"--source-imgref", "oci-archive:"+archive, disk)
	if code != 4 {
		t.Fatalf("exit %d, want 4 (target unusable)\n%s", code, tail(stderr, 20))
	}
	evs := parseEvents(t, []byte(stderr))
	if len(evs) == 0 {
		t.Fatal("no events")
	}
	final := evs[len(evs)-1]
	if final.Type != "error" || final.Code != "target-unusable" || final.ExitCode != 4 || final.Message == "" {
		t.Fatalf("last event: %+v, want an error event with code target-unusable and exit-code 4", final)
	}
	for _, e := range evs {
		if e.Type == "result" {
			t.Errorf("result event in a failed install")
		}
	}
	t.Logf("error event: code %s, exit %d, message %q, hint %q", final.Code, final.ExitCode, final.Message, final.Hint)
}

// TestProgressTerminal runs an install on a pseudo-terminal, replays what
// bootlace wrote through a small terminal model, and checks that bars were
// drawn and redrawn and that the final screen ends with the summary.
func TestProgressTerminal(t *testing.T) {
	requireRoot(t)
	archive := fixture(t, "bookworm")
	disk := sparseDisk(t, 8<<30)
	const cols, rows = 120, 40
	master, slave := openPTY(t, cols, rows)
	cmd := exec.Command(bootlaceBin, "install", "to-disk", "--bound-images", "skip", "--via-loopback",
		"--source-imgref", "oci-archive:"+archive, "--target-imgref", "quay.io/example/os:latest", disk)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	raw := make(chan []byte)
	go func() {
		// Reading the master ends with EIO once the last slave is closed.
		b, _ := io.ReadAll(master)
		raw <- b
	}()
	err := cmd.Wait()
	out := <-raw
	master.Close()
	screen := renderTerminal(out, cols)
	t.Logf("final screen:\n%s", screen)
	if err != nil {
		t.Fatalf("install on a terminal: %v", err)
	}
	// A frame drawn while a layer streamed: per-layer bars with a rate.
	// The log shows one from the middle of assemble, the longest byte phase.
	var rates []int
	for i := 0; ; {
		j := bytes.Index(out[i:], []byte("iB/s"))
		if j < 0 {
			break
		}
		rates = append(rates, i+j)
		i += j + 1
	}
	if len(rates) == 0 {
		t.Errorf("no per-layer bar with a byte rate was drawn")
	} else {
		at := rates[0]
		if a := bytes.Index(out, []byte("assemble")); a >= 0 {
			var later []int
			for _, r := range rates {
				if r > a {
					later = append(later, r)
				}
			}
			if len(later) > 0 {
				at = later[len(later)/2]
			}
		}
		mid := out[:at]
		if k := bytes.Index(out[at:], []byte("\r\n")); k >= 0 {
			mid = out[:at+k+2]
		}
		t.Logf("screen while a layer streams:\n%s", renderTerminal(mid, cols))
	}
	redraws := bytes.Count(out, []byte("A\x1b[J"))
	if redraws < 5 {
		t.Errorf("bars redrawn %d times, want several", redraws)
	}
	if !bytes.Contains(out, []byte("=>")) && !bytes.Contains(out, []byte("==]")) {
		t.Errorf("no bar fill drawn")
	}
	lines := strings.Split(strings.TrimRight(screen, "\n"), "\n")
	var sawBar bool
	for _, l := range lines {
		if strings.HasPrefix(l, "install") && strings.Contains(l, "100 %") {
			sawBar = true
		}
	}
	if !sawBar {
		t.Errorf("the final screen has no completed overall bar")
	}
	for _, p := range installPhases {
		if !strings.Contains(screen, p) {
			t.Errorf("the final screen does not list phase %s", p)
		}
	}
	// The summary is the end of the screen.
	idx := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "Installed oci-archive:") {
			idx = i
		}
	}
	if idx < 0 {
		t.Fatalf("no summary on the final screen")
	}
	rest := strings.Join(lines[idx:], "\n")
	for _, want := range []string{"digest:", "sha256:", "deployment:", "/ostree/deploy/", "kargs:", "root=UUID=", "phases:", "finalize"} {
		if !strings.Contains(rest, want) {
			t.Errorf("the summary lacks %q", want)
		}
	}
}

// openPTY opens a pseudo-terminal pair with the given size.
func openPTY(t *testing.T, cols, rows uint16) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("opening /dev/ptmx: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlocking the pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening the pty slave: %v", err)
	}
	if err := unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		t.Fatalf("setting the pty size: %v", err)
	}
	return m, s
}

// renderTerminal replays terminal output onto a screen model that knows
// what the bars use: CR, LF, cursor up/down/column and erase in display
// and line; other escape sequences (colors, modes) are dropped.
func renderTerminal(out []byte, width int) string {
	screen := [][]rune{nil}
	row, col := 0, 0
	put := func(r rune) {
		for len(screen) <= row {
			screen = append(screen, nil)
		}
		line := screen[row]
		for len(line) <= col {
			line = append(line, ' ')
		}
		line[col] = r
		screen[row] = line
		col++
	}
	rs := []rune(string(out))
	for i := 0; i < len(rs); i++ {
		switch r := rs[i]; {
		case r == '\r':
			col = 0
		case r == '\n':
			row++
			for len(screen) <= row {
				screen = append(screen, nil)
			}
		case r == '\b':
			if col > 0 {
				col--
			}
		case r == 0x1b && i+1 < len(rs) && rs[i+1] == '[':
			j := i + 2
			for j < len(rs) && (rs[j] >= '0' && rs[j] <= '9' || rs[j] == ';' || rs[j] == '?') {
				j++
			}
			if j >= len(rs) {
				i = j
				break
			}
			n, err := strconv.Atoi(strings.Split(string(rs[i+2:j]), ";")[0])
			if err != nil || n == 0 {
				n = 1
			}
			switch rs[j] {
			case 'A', 'F':
				row = max(row-n, 0)
				if rs[j] == 'F' {
					col = 0
				}
			case 'B', 'E':
				row += n
			case 'G':
				col = n - 1
			case 'J':
				if row < len(screen) {
					if col < len(screen[row]) {
						screen[row] = screen[row][:col]
					}
					screen = screen[:row+1]
				}
			case 'K':
				if row < len(screen) && col < len(screen[row]) {
					screen[row] = screen[row][:col]
				}
			}
			i = j
		case r < 0x20:
		default:
			if col >= width {
				row++
				col = 0
			}
			put(r)
		}
	}
	var b strings.Builder
	for _, l := range screen {
		fmt.Fprintln(&b, strings.TrimRight(string(l), " "))
	}
	return strings.TrimRight(b.String(), "\n") + "\n"
}
