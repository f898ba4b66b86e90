// Package selabel labels files bootlace writes outside any ostree commit
// (the bound-image store) from an image's SELinux policy: it reads the
// policy's file_contexts inside the image tree and sets security.selinux
// the way libselinux's selabel_lookup would choose, so the host's policy
// (or the host having none) never matters.
package selabel

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/imagetree"
	"golang.org/x/sys/unix"
)

// spec is one file_contexts line.
type spec struct {
	re      *regexp.Regexp
	mode    fs.FileMode // type bits to match; 0 matches any file type
	anyType bool
	context string // "<<none>>" means: leave unlabelled
	exact   bool   // no regex metacharacters: wins over any regex, as in libselinux
}

// Labeler looks up labels in one policy's file contexts.
type Labeler struct {
	specs []spec
}

// Load reads the file contexts of policy type policyType (SELINUXTYPE)
// from tree: file_contexts, then file_contexts.local, each read inside the
// tree. Lines whose regular expression Go cannot compile (PCRE-only
// syntax) are skipped.
func Load(tree, policyType string) (*Labeler, error) {
	l := &Labeler{}
	found := false
	for _, etc := range []string{"etc", "usr/etc"} {
		base := path.Join(etc, "selinux", policyType, "contexts/files/file_contexts")
		for _, p := range []string{base, base + ".local"} {
			data, err := imagetree.ReadFile(tree, p, 64<<20)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, errs.New(errs.Image, "reading SELinux file contexts", "/"+p, err, "")
			}
			found = true
			l.specs = append(l.specs, parse(data)...)
		}
		if found {
			break
		}
	}
	if !found {
		return nil, errs.New(errs.Image, "reading SELinux file contexts", "/etc/selinux/"+policyType+"/contexts/files/file_contexts",
			os.ErrNotExist, "the image's SELinux policy must ship its file_contexts, or install with --disable-selinux")
	}
	return l, nil
}

var fileTypes = map[string]fs.FileMode{
	"--": 0, "-d": fs.ModeDir, "-l": fs.ModeSymlink, "-b": fs.ModeDevice,
	"-c": fs.ModeDevice | fs.ModeCharDevice, "-p": fs.ModeNamedPipe, "-s": fs.ModeSocket,
}

func parse(data []byte) []spec {
	var out []spec
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") || len(f) < 2 {
			continue
		}
		s := spec{anyType: true, context: f[len(f)-1]}
		if len(f) == 3 {
			m, ok := fileTypes[f[1]]
			if !ok {
				continue
			}
			s.mode, s.anyType = m, false
		}
		re, err := regexp.Compile("^(?:" + f[0] + ")$")
		if err != nil {
			continue
		}
		s.re = re
		s.exact = !strings.ContainsAny(f[0], `.^$?*+|[({\`)
		out = append(out, s)
	}
	return out
}

// Lookup returns the label for a file at path p (as it will be seen on the
// booted system) with the given mode, and false when the policy says to
// leave it unlabelled or has no match. Like libselinux, exact paths win
// over regular expressions and, among each, the last matching line wins.
func (l *Labeler) Lookup(p string, mode fs.FileMode) (string, bool) {
	typ := mode.Type()
	if mode.IsRegular() {
		typ = 0
	}
	var best *spec
	for i := range l.specs {
		s := &l.specs[i]
		if !s.anyType && s.mode != typ {
			continue
		}
		if best != nil && best.exact && !s.exact {
			continue
		}
		if s.re.MatchString(p) {
			best = s
		}
	}
	if best == nil || best.context == "<<none>>" {
		return "", false
	}
	return best.context, true
}

// LabelTree labels every file under root as if root were at the path as
// on the booted system (e.g. /var/lib/containers/storage), without
// following symlinks.
func (l *Labeler) LabelTree(root, as string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		label, ok := l.Lookup(path.Join(as, filepath.ToSlash(rel)), info.Mode())
		if !ok {
			return nil
		}
		if err := unix.Lsetxattr(p, "security.selinux", append([]byte(label), 0), 0); err != nil {
			return fmt.Errorf("labelling %s as %s: %w", p, label, err)
		}
		return nil
	})
}
