package grub

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Entry is one Boot Loader Specification type #1 entry.
type Entry struct {
	// ID is the file name without ".conf" (e.g. "ostree-1-default").
	ID         string
	Title      string
	Version    string
	SortKey    string
	Linux      string
	Initrd     []string
	Options    string
	DeviceTree string
}

// ParseBLS parses the text of a BLS type #1 entry. Unknown keys are ignored,
// as the specification asks; an entry without a linux key is an error
// because nothing could boot it.
func ParseBLS(data []byte) (Entry, error) {
	var e Entry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val := line, ""
		if i := strings.IndexAny(line, " \t"); i >= 0 {
			key, val = line[:i], strings.TrimSpace(line[i+1:])
		}
		switch key {
		case "title":
			e.Title = val
		case "version":
			e.Version = val
		case "sort-key":
			e.SortKey = val
		case "linux":
			e.Linux = val
		case "initrd":
			// The specification allows several initrd lines, and some
			// writers put several paths on one line.
			e.Initrd = append(e.Initrd, strings.Fields(val)...)
		case "options":
			// Several options lines are concatenated.
			if e.Options != "" && val != "" {
				e.Options += " "
			}
			e.Options += val
		case "devicetree":
			e.DeviceTree = val
		}
	}
	if err := sc.Err(); err != nil {
		return Entry{}, fmt.Errorf("reading BLS entry: %w", err)
	}
	if e.Linux == "" {
		return Entry{}, fmt.Errorf("BLS entry has no linux key")
	}
	return e, nil
}

// ReadEntries reads bootDir/loader/entries/*.conf (bootDir is the host path
// of the /boot filesystem or directory) and returns the entries newest
// first, so that entry 0 is the default, as ostree orders them.
func ReadEntries(bootDir string) ([]Entry, error) {
	dir := filepath.Join(bootDir, "loader", "entries")
	names, err := filepath.Glob(filepath.Join(dir, "*.conf"))
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	var entries []Entry
	for _, name := range names {
		data, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("reading BLS entry %s: %w", name, err)
		}
		e, err := ParseBLS(data)
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", name, err)
		}
		e.ID = strings.TrimSuffix(filepath.Base(name), ".conf")
		entries = append(entries, e)
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("no BLS entries in %s", dir)
	}
	SortEntries(entries)
	return entries, nil
}

// SortEntries orders entries newest first. ostree gives the newest
// deployment the highest "version" (and the highest N in
// ostree-N-<stateroot>.conf), so both are compared as versions, descending;
// the sort-key, when present, groups entries first, as in the BLS
// specification.
func SortEntries(entries []Entry) {
	sort.SliceStable(entries, func(i, j int) bool {
		a, b := entries[i], entries[j]
		if a.SortKey != b.SortKey {
			return a.SortKey < b.SortKey
		}
		if c := compareVersions(a.Version, b.Version); c != 0 {
			return c > 0
		}
		return compareVersions(a.ID, b.ID) > 0
	})
}

// compareVersions compares strings so that runs of digits compare as
// numbers ("10" > "9"), like strverscmp without its leading-zero rules.
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		da, db := isDigit(a[0]), isDigit(b[0])
		switch {
		case da && db:
			na, ra := splitDigits(a)
			nb, rb := splitDigits(b)
			na = strings.TrimLeft(na, "0")
			nb = strings.TrimLeft(nb, "0")
			if len(na) != len(nb) {
				return cmpInt(len(na), len(nb))
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = ra, rb
		case da:
			// A digit sorts after anything else: "1.10" > "1.a".
			return 1
		case db:
			return -1
		case a[0] != b[0]:
			return cmpInt(int(a[0]), int(b[0]))
		default:
			a, b = a[1:], b[1:]
		}
	}
	return cmpInt(len(a), len(b))
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func splitDigits(s string) (string, string) {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return s[:i], s[i:]
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
