package installconfig

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/bootlace/bootlace/internal/errs"
)

// valueKind is the TOML type a schema field accepts.
type valueKind int

const (
	kindString valueKind = iota
	kindStringArray
	kindBool
	kindTable
)

func (k valueKind) String() string {
	switch k {
	case kindString:
		return "a string"
	case kindStringArray:
		return "an array of strings"
	case kindBool:
		return "a boolean"
	default:
		return "a table"
	}
}

// field describes one accepted key. enum, when set, lists the allowed
// string values (for arrays: of every element). lax tables only warn about
// unknown keys, as bootc does for [install.ostree].
type field struct {
	kind   valueKind
	enum   []string
	fields map[string]field
	lax    bool
}

// tomlDoc is a decoded TOML file plus what is needed to report errors
// against it.
type tomlDoc struct {
	path  string // path inside the image, for messages
	data  map[string]any
	lines map[string]int
}

// parseTOML decodes src and classifies syntax errors as image errors.
func parseTOML(imgPath string, src []byte, op string) (*tomlDoc, error) {
	var m map[string]any
	_, err := toml.Decode(string(src), &m)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			msg := pe.Message
			if pe.LastKey != "" {
				msg = fmt.Sprintf("key %q: %s", pe.LastKey, msg)
			}
			return nil, errs.New(errs.Image, op, imgPath,
				fmt.Errorf("line %d: %s", pe.Position.Line, msg), "fix the TOML syntax in the image")
		}
		return nil, errs.New(errs.Image, op, imgPath, err, "fix the TOML syntax in the image")
	}
	return &tomlDoc{path: imgPath, data: m, lines: keyLines(string(src))}, nil
}

// validate checks tbl (found at key prefix) against schema. Unknown keys in
// strict tables and wrong types are image errors naming file, line and key;
// unknown keys in lax tables are returned as warnings.
func (d *tomlDoc) validate(op string, prefix []string, tbl map[string]any, schema map[string]field, lax bool) ([]string, error) {
	keys := make([]string, 0, len(tbl))
	for k := range tbl {
		keys = append(keys, k)
	}
	// Sorted by line, then name, so the first error reported is the first in
	// the file and the result is deterministic.
	slices.SortFunc(keys, func(a, b string) int {
		la, lb := d.line(append(prefix, a)), d.line(append(prefix, b))
		if la != lb {
			return la - lb
		}
		return strings.Compare(a, b)
	})
	var warnings []string
	for _, k := range keys {
		key := append(slices.Clone(prefix), k)
		v := tbl[k]
		f, ok := schema[k]
		if !ok {
			if lax {
				warnings = append(warnings, fmt.Sprintf("%s: line %d: unknown key %q ignored", d.path, d.line(key), dotted(key)))
				continue
			}
			return nil, d.errorf(op, key, "unknown key")
		}
		if err := d.checkValue(key, v, f); err != nil {
			return nil, d.errorf(op, key, "%s", err)
		}
		if f.kind == kindTable {
			w, err := d.validate(op, key, v.(map[string]any), f.fields, f.lax)
			if err != nil {
				return nil, err
			}
			warnings = append(warnings, w...)
		}
	}
	return warnings, nil
}

func (d *tomlDoc) checkValue(key []string, v any, f field) error {
	switch f.kind {
	case kindString:
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("expected %s, found %s", f.kind, tomlType(v))
		}
		return checkEnum(s, f.enum)
	case kindBool:
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("expected %s, found %s", f.kind, tomlType(v))
		}
	case kindStringArray:
		arr, ok := v.([]any)
		if !ok {
			return fmt.Errorf("expected %s, found %s", f.kind, tomlType(v))
		}
		for i, e := range arr {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("expected %s, element %d is %s", f.kind, i, tomlType(e))
			}
			if err := checkEnum(s, f.enum); err != nil {
				return fmt.Errorf("element %d: %w", i, err)
			}
		}
	case kindTable:
		if _, ok := v.(map[string]any); !ok {
			return fmt.Errorf("expected %s, found %s", f.kind, tomlType(v))
		}
	}
	return nil
}

func checkEnum(s string, enum []string) error {
	if enum == nil || slices.Contains(enum, s) {
		return nil
	}
	return fmt.Errorf("invalid value %q, expected one of %s", s, strings.Join(enum, ", "))
}

func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case []any:
		return "an array"
	case []map[string]any:
		return "an array of tables"
	case map[string]any:
		return "a table"
	default:
		return "a date/time"
	}
}

func (d *tomlDoc) errorf(op string, key []string, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if l := d.line(key); l > 0 {
		return errs.New(errs.Image, op, d.path, fmt.Errorf("line %d: key %q: %s", l, dotted(key), msg), "fix or remove the key in the image")
	}
	return errs.New(errs.Image, op, d.path, fmt.Errorf("key %q: %s", dotted(key), msg), "fix or remove the key in the image")
}

// line returns the line where key, or failing that its closest parent, is
// defined; 0 when unknown.
func (d *tomlDoc) line(key []string) int {
	for n := len(key); n > 0; n-- {
		if l, ok := d.lines[lineKey(key[:n])]; ok {
			return l
		}
	}
	return 0
}

// Typed accessors, used after validate succeeded.

func getString(tbl map[string]any, k string) (string, bool) {
	s, ok := tbl[k].(string)
	return s, ok
}

func getBool(tbl map[string]any, k string) (bool, bool) {
	b, ok := tbl[k].(bool)
	return b, ok
}

func getStrings(tbl map[string]any, k string) ([]string, bool) {
	arr, ok := tbl[k].([]any)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(arr))
	for _, e := range arr {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out, true
}

func getTable(tbl map[string]any, k string) (map[string]any, bool) {
	t, ok := tbl[k].(map[string]any)
	return t, ok
}

func dotted(key []string) string {
	parts := make([]string, len(key))
	for i, k := range key {
		if k == "" || strings.ContainsAny(k, ". \t\"'=[]") {
			parts[i] = fmt.Sprintf("%q", k)
		} else {
			parts[i] = k
		}
	}
	return strings.Join(parts, ".")
}

func lineKey(key []string) string { return strings.Join(key, "\x00") }

// keyLines maps each key defined in src (as lineKey of its full path) to the
// line of its first definition. BurntSushi/toml keeps key positions private,
// so this is a small line scanner; it understands table headers, dotted and
// quoted keys, and skips multi-line strings. Keys inside inline tables are
// not found; line() falls back to the enclosing key for them.
func keyLines(src string) map[string]int {
	lines := map[string]int{}
	var table []string
	inMulti := "" // the delimiter of the multi-line string being skipped
	for i, raw := range strings.Split(src, "\n") {
		n := i + 1
		if inMulti != "" {
			if strings.Contains(raw, inMulti) {
				inMulti = ""
			}
			continue
		}
		t := strings.TrimSpace(raw)
		if t == "" || t[0] == '#' {
			continue
		}
		if t[0] == '[' {
			hdr := strings.TrimLeft(t, "[")
			end := strings.Index(hdr, "]")
			if end < 0 {
				continue
			}
			if k, ok := splitKey(hdr[:end]); ok {
				table = k
				record(lines, table, n)
			}
			continue
		}
		eq := keyEnd(t)
		if eq < 0 {
			continue
		}
		k, ok := splitKey(t[:eq])
		if !ok {
			continue
		}
		full := append(slices.Clone(table), k...)
		record(lines, full, n)
		rest := t[eq+1:]
		for _, delim := range []string{`"""`, `'''`} {
			if strings.Count(rest, delim)%2 == 1 {
				inMulti = delim
				break
			}
		}
	}
	return lines
}

// record stores the line of key and of any not yet seen parent (dotted keys
// define their parents implicitly).
func record(lines map[string]int, key []string, n int) {
	for j := 1; j <= len(key); j++ {
		lk := lineKey(key[:j])
		if _, ok := lines[lk]; !ok {
			lines[lk] = n
		}
	}
}

// keyEnd returns the index of the '=' that ends the key at the start of s,
// or -1 when s does not start with a key.
func keyEnd(s string) int {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '=':
			return i
		case c == '"' || c == '\'':
			j := strings.IndexByte(s[i+1:], c)
			if j < 0 {
				return -1
			}
			i += j + 1
		case c == '.' || c == ' ' || c == '\t' || c == '_' || c == '-' ||
			(c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'):
		default:
			return -1
		}
	}
	return -1
}

// splitKey splits a dotted TOML key into its unquoted parts.
func splitKey(s string) ([]string, bool) {
	var parts []string
	s = strings.TrimSpace(s)
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return nil, false
		}
		var part string
		if s[0] == '"' || s[0] == '\'' {
			j := strings.IndexByte(s[1:], s[0])
			if j < 0 {
				return nil, false
			}
			part = s[1 : j+1]
			s = s[j+2:]
		} else {
			j := strings.IndexAny(s, ". \t")
			if j < 0 {
				j = len(s)
			}
			part = s[:j]
			s = s[j:]
		}
		parts = append(parts, part)
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return parts, true
		}
		if s[0] != '.' {
			return nil, false
		}
		s = s[1:]
	}
}
