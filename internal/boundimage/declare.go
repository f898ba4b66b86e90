// Package boundimage handles logically bound images (LBIs): the application
// images an OS image declares in /usr/lib/bootc/bound-images.d, which must be
// present in the target's container storage from the first boot. It reads
// the declarations from an image tree and copies the images into
// <physical root>/ostree/bootc/storage with the containers libraries, without
// podman or any container runtime.
package boundimage

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/imagetree"
	"golang.org/x/sys/unix"
)

// DeclDir is where an image declares its bound images.
const DeclDir = "usr/lib/bootc/bound-images.d"

// Image is one bound image an OS image declares.
type Image struct {
	// Ref is the Image= value, e.g. quay.io/example/app:latest.
	Ref string
	// Decl is the declaring entry, e.g. /usr/lib/bootc/bound-images.d/app.image.
	Decl string
}

// List reads the bound images declared in tree (a staged image or a
// deployment): each entry of usr/lib/bootc/bound-images.d must be a symlink
// to a Quadlet .image or .container file, resolved inside the tree. Like
// bootc, it refuses AuthFile= and systemd % specifiers. Entries with other
// suffixes are ignored. The result is sorted by Ref.
func List(tree string) ([]Image, error) {
	names, err := imagetree.ReadDirNames(tree, DeclDir)
	if errors.Is(err, os.ErrNotExist) {
		return []Image{}, nil
	}
	if err != nil {
		return nil, errs.New(errs.Image, "reading", "/"+DeclDir, err, "")
	}
	out := []Image{}
	for _, n := range names {
		ext := path.Ext(n)
		if ext != ".image" && ext != ".container" {
			continue
		}
		decl := "/" + path.Join(DeclDir, n)
		data, err := readDecl(tree, path.Join(DeclDir, n))
		if err != nil {
			return nil, errs.New(errs.Image, "reading bound image", decl, err,
				"each entry of /"+DeclDir+" must be a symlink to a Quadlet .image or .container file in the image")
		}
		ref, err := parseQuadlet(data, ext)
		if err != nil {
			return nil, errs.New(errs.Image, "reading bound image", decl, err, hintFor(err))
		}
		out = append(out, Image{Ref: ref, Decl: decl})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out, nil
}

// Refs returns the Ref of each image.
func Refs(imgs []Image) []string {
	out := make([]string, 0, len(imgs))
	for _, im := range imgs {
		out = append(out, im.Ref)
	}
	return out
}

var (
	errAuthFile  = errors.New("AuthFile= is not supported for bound images")
	errSpecifier = errors.New("systemd % specifiers are not supported in Image= of bound images")
	errNoImage   = errors.New("no Image= key")
)

func hintFor(err error) string {
	switch {
	case errors.Is(err, errAuthFile):
		return "remove AuthFile= and put the registry credentials in the image's /etc/ostree/auth.json or /usr/lib/ostree/auth.json, or pass --authfile"
	case errors.Is(err, errSpecifier):
		return "write the image reference literally (%% stands for a single %)"
	case errors.Is(err, errNoImage):
		return "add Image=REFERENCE to the [Image] or [Container] section"
	}
	return ""
}

// readDecl reads the Quadlet file an entry links to. The entry itself must
// be a symlink (bootc's rule); its target is resolved inside the tree. A
// staged tree keeps /etc at /usr/etc (ostree's convention), so a link into
// /etc that finds nothing is tried there.
func readDecl(tree, entry string) ([]byte, error) {
	f, err := imagetree.Open(tree, entry, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	f.Close()
	if err != nil {
		return nil, err
	}
	if fi.Mode()&os.ModeSymlink == 0 {
		return nil, errors.New("not a symlink")
	}
	data, err := imagetree.ReadFile(tree, entry, 1<<20)
	if !errors.Is(err, os.ErrNotExist) {
		return data, err
	}
	target, lerr := readlinkIn(tree, entry)
	if lerr != nil {
		return nil, err
	}
	if rest, ok := strings.CutPrefix(target, "etc/"); ok {
		if d, err2 := imagetree.ReadFile(tree, "usr/etc/"+rest, 1<<20); err2 == nil {
			return d, nil
		}
	}
	return nil, err
}

// readlinkIn returns the tree-relative path a symlink entry names.
func readlinkIn(tree, entry string) (string, error) {
	dir, err := imagetree.Open(tree, path.Dir(entry), unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return "", err
	}
	defer dir.Close()
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(int(dir.Fd()), path.Base(entry), buf)
	if err != nil {
		return "", err
	}
	t := string(buf[:n])
	if !path.IsAbs(t) {
		t = path.Join("/", path.Dir(entry), t)
	}
	return strings.TrimPrefix(path.Clean(t), "/"), nil
}

// parseQuadlet returns the Image= of a Quadlet file: from [Image] for .image
// files, from [Container] for .container files. It follows systemd's unit
// syntax: comments, continuation lines, whitespace around "=", and the last
// assignment wins.
func parseQuadlet(data []byte, ext string) (string, error) {
	want := "[Container]"
	if ext == ".image" {
		want = "[Image]"
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	section, image, found := "", "", false
	var cont strings.Builder
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if cont.Len() == 0 && (l == "" || l[0] == '#' || l[0] == ';') {
			continue
		}
		if strings.HasSuffix(l, `\`) {
			cont.WriteString(strings.TrimSuffix(l, `\`) + " ")
			continue
		}
		if cont.Len() > 0 {
			cont.WriteString(l)
			l, _ = strings.CutSuffix(cont.String(), " ")
			cont.Reset()
		}
		if strings.HasPrefix(l, "[") {
			section = l
			continue
		}
		if section != want {
			continue
		}
		key, val, ok := strings.Cut(l, "=")
		if !ok {
			continue
		}
		switch strings.TrimSpace(key) {
		case "AuthFile":
			if ext == ".image" {
				return "", errAuthFile
			}
		case "Image":
			image, found = strings.TrimSpace(val), true
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if !found || image == "" {
		return "", errNoImage
	}
	return unescapeSpecifiers(image)
}

// unescapeSpecifiers turns %% into % and refuses any other specifier: the
// installer cannot know what %H or %u would expand to on the booted system.
func unescapeSpecifiers(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '%' {
			b.WriteByte('%')
			i++
			continue
		}
		return "", fmt.Errorf("%w: %q", errSpecifier, s)
	}
	return b.String(), nil
}
