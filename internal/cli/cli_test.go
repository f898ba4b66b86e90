package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestExecuteErrorEvent checks that failures reach the progress stream as
// an error event with the stable code and exit code, and that JSON on
// stderr is not mixed with text.
func TestExecuteErrorEvent(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		code     int
		wantJSON bool // stderr is JSON lines ending with the error event
		wantText string
	}{
		{
			name: "missing source, JSON progress",
			args: []string{"install", "to-disk", "--progress", "json", "/dev/null"},
			code: 2, wantJSON: true,
		},
		{
			name: "bad boot loader after the sink exists",
			args: []string{"install", "to-filesystem", "--progress", "json", "--source-imgref", "oci:/nowhere", "--bootloader", "lilo", "/mnt"},
			code: 2, wantJSON: true,
		},
		{
			name: "bad progress mode is text",
			args: []string{"install", "to-disk", "--progress", "fancy", "--source-imgref", "oci:/x", "/dev/null"},
			code: 2, wantText: "unknown mode \"fancy\"",
		},
		{
			name: "closed progress fd",
			args: []string{"install", "to-disk", "--progress-fd", "987", "--source-imgref", "oci:/x", "/dev/null"},
			code: 2, wantText: "not an open file descriptor",
		},
		{
			name: "unknown replace mode",
			args: []string{"install", "to-filesystem", "--progress", "plain", "--source-imgref", "oci:/nowhere", "--replace", "merge", "/mnt"},
			code: 2, wantText: "parsing --replace merge: unknown replace mode",
		},
		{
			name: "to-existing-root takes one ROOT at most",
			args: []string{"install", "to-existing-root", "--progress", "plain", "--source-imgref", "oci:/nowhere", "/a", "/b"},
			code: 2, wantText: "expected at most one ROOT directory, got 2 arguments",
		},
		{
			name: "cleanup needs alongside",
			args: []string{"install", "to-existing-root", "--progress", "plain", "--source-imgref", "oci:/nowhere", "--replace", "wipe", "--cleanup", "/nowhere"},
			code: 2, wantText: "--cleanup removes the old system kept by --replace alongside",
		},
		{
			name: "plain progress prints the error once",
			args: []string{"install", "to-disk", "--progress", "plain", "/dev/null"},
			code: 2, wantText: "error: choosing the image to install: no --source-imgref given",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Execute(context.Background(), tt.args, &stdout, &stderr)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tt.code, stderr.String())
			}
			if tt.wantText != "" {
				if !strings.Contains(stderr.String(), tt.wantText) || strings.Count(stderr.String(), "error:") != 1 {
					t.Errorf("stderr %q, want one error with %q", stderr.String(), tt.wantText)
				}
			}
			if !tt.wantJSON {
				return
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			var last struct {
				V        int    `json:"v"`
				Type     string `json:"type"`
				Code     string `json:"code"`
				ExitCode int    `json:"exit-code"`
				Message  string `json:"message"`
			}
			for _, l := range lines {
				if err := json.Unmarshal([]byte(l), &last); err != nil {
					t.Fatalf("stderr line is not JSON: %q", l)
				}
			}
			if last.V != 1 || last.Type != "error" || last.Code != "usage" || last.ExitCode != 2 || last.Message == "" {
				t.Errorf("last event %+v, want a usage error event", last)
			}
		})
	}
}

// TestProgressFD checks that --progress-fd receives the error event.
func TestProgressFD(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var stdout, stderr bytes.Buffer
	code := Execute(context.Background(), []string{"install", "to-disk", "--progress", "none", "--progress-fd", strconv.Itoa(int(w.Fd())), "/dev/null"}, &stdout, &stderr)
	w.Close()
	buf := make([]byte, 4096)
	n, _ := r.Read(buf)
	var ev struct{ Type, Code, Message string }
	if err := json.Unmarshal(buf[:n], &ev); err != nil || code != 2 || ev.Type != "error" || ev.Code != "usage" ||
		!strings.HasPrefix(ev.Message, "choosing the image to install") {
		t.Errorf("exit %d, fd got %q (%v)", code, buf[:n], err)
	}
}

// TestHelp checks that every command has a description and an example.
func TestHelp(t *testing.T) {
	root := newRoot(&session{})
	for _, c := range allCommands(root) {
		if c.Hidden || c.Name() == "help" || strings.HasPrefix(c.CommandPath(), "bootlace completion") {
			continue
		}
		if c.Short == "" || c.Example == "" {
			t.Errorf("%s: Short %q, Example %q: every verb needs both", c.CommandPath(), c.Short, c.Example)
		}
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if len(f.Usage) < 10 {
				t.Errorf("%s --%s: usage %q is too short to help", c.CommandPath(), f.Name, f.Usage)
			}
		})
	}
}

func allCommands(c *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{c}
	for _, sub := range c.Commands() {
		out = append(out, allCommands(sub)...)
	}
	return out
}

// TestManPages generates the man pages into a temporary directory.
func TestManPages(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	if code := Execute(context.Background(), []string{"man", dir}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, name := range []string{"bootlace.8", "bootlace-install.8", "bootlace-install-to-disk.8", "bootlace-install-to-filesystem.8", "bootlace-install-print-configuration.8"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("man page %s: %v", name, err)
			continue
		}
		if !bytes.Contains(b, []byte(".SH EXAMPLE")) {
			t.Errorf("man page %s has no EXAMPLE section", name)
		}
	}
}
