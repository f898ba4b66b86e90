package kargs

import (
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"   \t\n", nil},
		{"quiet", []string{"quiet"}},
		{"  root=UUID=abc  rw\tquiet\n", []string{"root=UUID=abc", "rw", "quiet"}},
		{`foo="a b" bar`, []string{`foo="a b"`, "bar"}},
		{`"a b"=c d`, []string{`"a b"=c`, "d"}},
		{`foo="a b`, []string{`foo="a b`}},
		{`foo="a b   `, []string{`foo="a b   `}},
		{`a="" b`, []string{`a=""`, "b"}},
		{`x="1 2"y"3 4" z`, []string{`x="1 2"y"3 4"`, "z"}},
		{"console=ttyS0,115200n8 console=hvc0", []string{"console=ttyS0,115200n8", "console=hvc0"}},
	}
	for _, tt := range tests {
		if got := Parse(tt.in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Parse(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestJoin(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{"root=UUID=x", "rw"}, "root=UUID=x rw"},
		{[]string{"foo=a b"}, `foo="a b"`},
		{[]string{"a b"}, `"a b"`},
		{[]string{"k=v=w x"}, `k="v=w x"`},
		{[]string{`foo="a b"`, ""}, `foo="a b"`},
		{[]string{"tab\there"}, "\"tab\there\""},
	}
	for _, tt := range tests {
		if got := Join(tt.in); got != tt.want {
			t.Errorf("Join(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestAssemble(t *testing.T) {
	tests := []struct {
		name                                     string
		root, config, kargsD, deletes, cli, want []string
	}{
		{
			name:   "order root, config, kargs.d, cli",
			root:   []string{"root=UUID=r", "rw", "boot=UUID=b"},
			config: []string{"localtestkarg=somevalue"},
			kargsD: []string{"testing-kargsd=3"},
			cli:    []string{"foo=bar"},
			want:   []string{"root=UUID=r", "rw", "boot=UUID=b", "localtestkarg=somevalue", "testing-kargsd=3", "foo=bar"},
		},
		{
			name:   "exact duplicates dropped, first kept",
			root:   []string{"root=UUID=r", "rw"},
			config: []string{"rw", "console=tty0"},
			kargsD: []string{"console=ttyS0", "console=tty0", "rw"},
			cli:    []string{"console=tty0", "root=UUID=r", "new"},
			want:   []string{"root=UUID=r", "rw", "console=tty0", "console=ttyS0", "new"},
		},
		{
			name:    "bare key deletes every key and key=...",
			root:    []string{"root=UUID=r", "rw"},
			config:  []string{"console=tty0", "quiet", "console"},
			kargsD:  []string{"console=ttyS0,115200", "consoleblank=0"},
			deletes: []string{"console"},
			want:    []string{"root=UUID=r", "rw", "quiet", "consoleblank=0"},
		},
		{
			name:    "key=value deletes only that pair",
			config:  []string{"console=tty0", "console=ttyS0", "console"},
			deletes: []string{"console=ttyS0"},
			want:    []string{"console=tty0", "console"},
		},
		{
			name:    "deletes do not touch cli kargs",
			root:    []string{"rw"},
			config:  []string{"quiet"},
			deletes: []string{"quiet", "rw"},
			cli:     []string{"quiet"},
			want:    []string{"quiet"},
		},
		{
			name:    "deletes may delete root setup",
			root:    []string{"root=UUID=r", "rw", "selinux=0"},
			deletes: []string{"selinux=0"},
			want:    []string{"root=UUID=r", "rw"},
		},
		{
			name:    "elements holding several args are split",
			config:  []string{"a=1 b=2"},
			kargsD:  []string{`c="x y" a=1`},
			deletes: []string{"b c"},
			cli:     []string{"d e", "d"},
			want:    []string{"a=1", "d", "e"},
		},
		{
			name:    "quoted value deleted by key",
			config:  []string{`dyndbg="file x +p"`, "keep"},
			deletes: []string{"dyndbg"},
			want:    []string{"keep"},
		},
		{name: "all empty", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Assemble(tt.root, tt.config, tt.kargsD, tt.deletes, tt.cli)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDeleteDoesNotModifyInput(t *testing.T) {
	in := []string{"a", "b", "c"}
	_ = Delete(in, []string{"b"})
	if !reflect.DeepEqual(in, []string{"a", "b", "c"}) {
		t.Errorf("input modified: %q", in)
	}
}

// FuzzParse checks Parse/Join round-trip: what Parse produces, Join writes
// back so that Parse gives the same arguments; Join of unquoted arguments
// keeps their count; neither panics.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "quiet", `foo="a b" bar`, `a="b`, "root=UUID=x rw\tquiet\n", `"a b"=c`, `x="" "`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := Parse(s)
		for _, a := range args {
			if a == "" {
				t.Fatalf("Parse(%q) produced an empty argument", s)
			}
		}
		j := Join(args)
		if got := Parse(j); !reflect.DeepEqual(got, args) {
			t.Fatalf("Parse(Join(Parse(%q))) = %q, want %q (joined %q)", s, got, args, j)
		}
		// Arbitrary strings without quotes, e.g. from a config file, stay
		// one argument each once joined.
		var plain []string
		for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == '|' }) {
			if f != "" && !strings.Contains(f, `"`) {
				plain = append(plain, f)
			}
		}
		if n := len(Parse(Join(plain))); n != countNonBlank(plain) {
			t.Fatalf("Join(%q) = %q parses into %d args, want %d", plain, Join(plain), n, countNonBlank(plain))
		}
	})
}

// countNonBlank counts the arguments Join keeps: all but empty strings
// (a whitespace-only argument is written as a quoted blank, still one).
func countNonBlank(args []string) int {
	n := 0
	for _, a := range args {
		if a != "" {
			n++
		}
	}
	return n
}
