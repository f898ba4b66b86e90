// Package kargs parses, formats and assembles kernel command lines the way
// bootc does at install time.
package kargs

import (
	"slices"
	"strings"
)

// isSpace matches the kernel's isspace() for command-line splitting.
func isSpace(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\v', '\f', '\r':
		return true
	}
	return false
}

// Parse splits a kernel command line into arguments. Double quotes group
// whitespace into one argument (foo="a b" is one argument) and are kept in
// the result, as /proc/cmdline shows them; an unterminated quote runs to the
// end of the line, as in the kernel's parser.
func Parse(s string) []string {
	var out []string
	i := 0
	for i < len(s) {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i == len(s) {
			break
		}
		start := i
		inQuote := false
		for i < len(s) && (inQuote || !isSpace(s[i])) {
			if s[i] == '"' {
				inQuote = !inQuote
			}
			i++
		}
		out = append(out, s[start:i])
	}
	return out
}

// Join formats arguments as a command line. An argument with whitespace
// outside quotes is quoted: key=a b becomes key="a b", a b becomes "a b".
// Arguments that hold both a double quote and unquoted whitespace cannot be
// written on a kernel command line and are emitted as is. Empty arguments
// are dropped.
func Join(args []string) string {
	parts := make([]string, 0, len(args))
	for _, a := range args {
		if a == "" {
			continue
		}
		parts = append(parts, quote(a))
	}
	return strings.Join(parts, " ")
}

func quote(a string) string {
	if !needsQuote(a) || strings.Contains(a, `"`) {
		return a
	}
	if k, v, ok := strings.Cut(a, "="); ok && !strings.ContainsFunc(k, isSpaceRune) {
		return k + `="` + v + `"`
	}
	return `"` + a + `"`
}

func isSpaceRune(r rune) bool { return r < 0x80 && isSpace(byte(r)) }

// needsQuote reports whether a would be split by Parse.
func needsQuote(a string) bool {
	p := Parse(a)
	return len(p) != 1 || p[0] != a
}

// Key returns the part of arg before the first '='.
func Key(arg string) string {
	k, _, _ := strings.Cut(arg, "=")
	return k
}

// Assemble builds the install kernel command line in bootc's (HEAD) order:
// root setup, install config kargs, kargs.d, with exact duplicates dropped
// (the first kept); then deletes are applied (a bare key removes every key
// and key=..., key=value removes only that exact argument); then the CLI
// --karg values are appended so deletions cannot remove them, still without
// exact duplicates. Every element of every list may itself hold several
// arguments (as bootc accepts for --karg) and is split with Parse.
func Assemble(rootSetup, installConfig, kargsD, deletes, cli []string) []string {
	var out []string
	add := func(lists ...[]string) {
		for _, l := range lists {
			for _, a := range split(l) {
				if !slices.Contains(out, a) {
					out = append(out, a)
				}
			}
		}
	}
	add(rootSetup, installConfig, kargsD)
	out = Delete(out, split(deletes))
	add(cli)
	return out
}

// Delete returns args without those matched by deletes: a bare key matches
// key and every key=...; key=value matches only that exact argument.
func Delete(args, deletes []string) []string {
	if len(deletes) == 0 {
		return args
	}
	return slices.DeleteFunc(slices.Clone(args), func(a string) bool {
		for _, d := range deletes {
			if strings.Contains(d, "=") {
				if a == d {
					return true
				}
			} else if Key(a) == d {
				return true
			}
		}
		return false
	})
}

func split(l []string) []string {
	var out []string
	for _, e := range l {
		out = append(out, Parse(e)...)
	}
	return out
}
