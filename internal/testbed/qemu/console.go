package qemu

import (
	"bytes"
	"io"
	"regexp"
	"strings"
)

// linuxBanner is the kernel's first console line; seeing it proves the
// firmware and bootloader stages worked.
const linuxBanner = "Linux version"

// maxPartial bounds a console line that never ends (firmware screen drawing)
// so the pending buffer cannot grow without limit.
const maxPartial = 64 << 10

// ansiRE matches CSI sequences (colours, cursor moves) and two-byte escapes.
var ansiRE = regexp.MustCompile(`\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]`)

// cleanLine removes ANSI escapes, carriage returns and other control bytes
// (except tab) so that firmware and systemd output can be matched as text.
func cleanLine(b []byte) string {
	s := ansiRE.ReplaceAllString(string(b), "")
	return strings.Map(func(r rune) rune {
		if r == '\t' || r >= 0x20 && r != 0x7f {
			return r
		}
		return -1
	}, s)
}

// console follows the serial output: it cleans complete lines into the log,
// forwards them to out, and records markers, fail patterns and the kernel
// banner. A line still being printed is matched too, because prompts such
// as "grub rescue>" never end with a newline.
type console struct {
	markers, fails []string
	out            io.Writer // may be nil

	log     strings.Builder
	partial []byte
	seen    map[string]bool
	order   []string // markers in the order first seen
	linux   bool
	failed  string // first fail pattern seen
	failAt  string // the line it was seen in
	outErr  error
}

func newConsole(markers, fails []string, out io.Writer) *console {
	return &console{markers: uniq(markers), fails: fails, out: out, seen: map[string]bool{}}
}

// feed consumes a chunk of raw serial output.
func (c *console) feed(chunk []byte) {
	c.partial = append(c.partial, chunk...)
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			break
		}
		c.line(c.partial[:i])
		c.partial = c.partial[i+1:]
	}
	if len(c.partial) > maxPartial {
		c.line(c.partial)
		c.partial = nil
	}
	if len(c.partial) > 0 {
		c.match(cleanLine(c.partial))
	}
	// Keep the retained slice small when most of it was consumed.
	c.partial = append([]byte(nil), c.partial...)
}

// flush ends the last, unterminated line.
func (c *console) flush() {
	if len(c.partial) > 0 {
		c.line(c.partial)
		c.partial = nil
	}
}

func (c *console) line(raw []byte) {
	s := cleanLine(raw)
	c.match(s)
	c.log.WriteString(s)
	c.log.WriteByte('\n')
	if c.out != nil && c.outErr == nil {
		_, c.outErr = io.WriteString(c.out, s+"\n")
	}
}

func (c *console) match(s string) {
	if !c.linux && strings.Contains(s, linuxBanner) {
		c.linux = true
	}
	for _, m := range c.markers {
		if !c.seen[m] && strings.Contains(s, m) {
			c.seen[m] = true
			c.order = append(c.order, m)
		}
	}
	if c.failed == "" {
		for _, f := range c.fails {
			if strings.Contains(s, f) {
				c.failed, c.failAt = f, s
				break
			}
		}
	}
}

// allSeen reports whether every marker appeared (false without markers).
func (c *console) allSeen() bool {
	return len(c.markers) > 0 && len(c.order) == len(c.markers)
}

// missing lists the markers not seen yet.
func (c *console) missing() []string {
	var m []string
	for _, s := range c.markers {
		if !c.seen[s] {
			m = append(m, s)
		}
	}
	return m
}

func uniq(ss []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// tailLines returns the last n lines of s.
func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
