package installconfig

import (
	"fmt"
	"strings"
)

// keyfile is a parsed GLib key file: groups of key=value pairs, in file
// order. A repeated key keeps its last value, as GLib does.
type keyfile struct {
	groups []string
	values map[string]map[string]string
}

// parseKeyfile parses the GLib key file subset ostree's config files use:
// "# comments", "[group]" headers and "key = value" lines with the \s \n \t
// \r \\ escapes. Errors carry the line number.
func parseKeyfile(src string) (*keyfile, error) {
	kf := &keyfile{values: map[string]map[string]string{}}
	group := ""
	for i, raw := range strings.Split(src, "\n") {
		n := i + 1
		line := strings.TrimRight(raw, "\r")
		t := strings.TrimLeft(line, " \t")
		if t == "" || t[0] == '#' {
			continue
		}
		if t[0] == '[' {
			t = strings.TrimRight(t, " \t")
			if len(t) < 3 || t[len(t)-1] != ']' {
				return nil, fmt.Errorf("line %d: invalid group header %q", n, t)
			}
			name := t[1 : len(t)-1]
			if strings.ContainsAny(name, "[]") {
				return nil, fmt.Errorf("line %d: invalid group name %q", n, name)
			}
			group = name
			if _, ok := kf.values[group]; !ok {
				kf.values[group] = map[string]string{}
				kf.groups = append(kf.groups, group)
			}
			continue
		}
		eq := strings.IndexByte(t, '=')
		if eq < 0 {
			return nil, fmt.Errorf("line %d: %q is not a group, key=value pair or comment", n, t)
		}
		key := strings.TrimRight(t[:eq], " \t")
		if key == "" {
			return nil, fmt.Errorf("line %d: empty key", n)
		}
		if group == "" {
			return nil, fmt.Errorf("line %d: key %q before the first group", n, key)
		}
		val, err := unescapeKeyfile(strings.TrimLeft(t[eq+1:], " \t"))
		if err != nil {
			return nil, fmt.Errorf("line %d: key %q: %w", n, key, err)
		}
		kf.values[group][key] = val
	}
	return kf, nil
}

func unescapeKeyfile(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		i++
		if i == len(s) {
			return "", fmt.Errorf("value ends with a backslash")
		}
		switch s[i] {
		case 's':
			b.WriteByte(' ')
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case '\\':
			b.WriteByte('\\')
		default:
			return "", fmt.Errorf("invalid escape \\%c", s[i])
		}
	}
	return b.String(), nil
}

// get returns the value of key in group.
func (kf *keyfile) get(group, key string) (string, bool) {
	v, ok := kf.values[group][key]
	return v, ok
}
