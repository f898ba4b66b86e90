package installconfig

import (
	"fmt"
	"strings"

	"github.com/bootlace/bootlace/internal/errs"
)

// prepareRootPaths are searched in order; the first one found is used.
// usr/etc stands in for etc in staged ostree trees.
var prepareRootPaths = []string{
	"etc/ostree/prepare-root.conf",
	"usr/etc/ostree/prepare-root.conf",
	"usr/lib/ostree/prepare-root.conf",
}

// Tristate is a yes/no/maybe setting of ostree-prepare-root.
type Tristate int

const (
	// Maybe means "use it when available"; ostree's default for composefs.
	Maybe Tristate = iota
	// No disables the feature.
	No
	// Yes requires the feature; boot fails without it.
	Yes
)

func (t Tristate) String() string {
	switch t {
	case No:
		return "no"
	case Yes:
		return "yes"
	default:
		return "maybe"
	}
}

// PrepareRoot is the image's ostree-prepare-root configuration.
type PrepareRoot struct {
	// Path is the file used, inside the image.
	Path string
	// Composefs is [composefs] enabled; "signed" and "verity" mean Yes.
	Composefs Tristate
	// ComposefsSigned is set by enabled=signed: the commit must carry a
	// composefs signature.
	ComposefsSigned bool
	// ComposefsVerity is set by enabled=signed or enabled=verity: every
	// object needs fs-verity.
	ComposefsVerity bool
	// RootTransient is [root] transient: a writable overlay on /.
	RootTransient bool
	// EtcTransient is [etc] transient: /etc is not persisted.
	EtcTransient bool

	kf *keyfile
}

const opPrepareRoot = "reading prepare-root.conf"

// LoadPrepareRoot reads the image's prepare-root.conf. A missing file is not
// an error and yields nil: unlike bootc, which requires it, bootlace accepts
// images that do not ship one (Debian's ostree packages install none), and
// then ostree's built-in defaults apply.
func LoadPrepareRoot(root string) (*PrepareRoot, error) {
	t, err := openTree(root)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	for _, p := range prepareRootPaths {
		data, err := t.readFile(p)
		if notExist(err) {
			continue
		}
		if err != nil {
			return nil, errs.New(errs.Image, opPrepareRoot, "/"+p, err, "")
		}
		pr, err := parsePrepareRoot(string(data))
		if err != nil {
			return nil, errs.New(errs.Image, opPrepareRoot, "/"+p, err, "fix prepare-root.conf in the image")
		}
		pr.Path = "/" + p
		return pr, nil
	}
	return nil, nil
}

func parsePrepareRoot(src string) (*PrepareRoot, error) {
	kf, err := parseKeyfile(src)
	if err != nil {
		return nil, err
	}
	pr := &PrepareRoot{kf: kf}
	if v, ok := kf.get("composefs", "enabled"); ok {
		switch s := strings.TrimSpace(v); s {
		case "signed":
			pr.Composefs, pr.ComposefsSigned, pr.ComposefsVerity = Yes, true, true
		case "verity":
			pr.Composefs, pr.ComposefsVerity = Yes, true
		default:
			ts, err := parseTristate(s)
			if err != nil {
				return nil, fmt.Errorf("[composefs] enabled: %w", err)
			}
			pr.Composefs = ts
		}
	}
	if pr.RootTransient, err = keyfileBool(kf, "root", "transient"); err != nil {
		return nil, err
	}
	if pr.EtcTransient, err = keyfileBool(kf, "etc", "transient"); err != nil {
		return nil, err
	}
	return pr, nil
}

func parseTristate(s string) (Tristate, error) {
	switch s {
	case "yes", "true", "1":
		return Yes, nil
	case "no", "false", "0":
		return No, nil
	case "maybe":
		return Maybe, nil
	}
	return Maybe, fmt.Errorf("invalid value %q, expected yes, no, maybe, signed or verity", s)
}

// keyfileBool parses a GLib boolean; an absent key is false.
func keyfileBool(kf *keyfile, group, key string) (bool, error) {
	v, ok := kf.get(group, key)
	if !ok {
		return false, nil
	}
	switch strings.TrimSpace(v) {
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, fmt.Errorf("[%s] %s: invalid boolean %q", group, key, v)
}

// RequiresVerity reports whether the image demands fs-verity on the ostree
// objects (composefs enabled=signed or =verity). Safe on a nil receiver.
func (p *PrepareRoot) RequiresVerity() bool {
	return p != nil && p.ComposefsVerity
}

// Flatten returns every setting as "group.key" -> value, the shape bootc
// keeps the file in. Safe on a nil receiver.
func (p *PrepareRoot) Flatten() map[string]string {
	out := map[string]string{}
	if p == nil || p.kf == nil {
		return out
	}
	for _, g := range p.kf.groups {
		for k, v := range p.kf.values[g] {
			out[g+"."+k] = v
		}
	}
	return out
}
