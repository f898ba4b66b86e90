// Package imgref parses container image references as bootc spells them
// (TRANSPORT:NAME) and derives the strings bootc writes into an installed
// system: the origin's container-image-reference and the ostree ref that
// holds the image's commit.
package imgref

import (
	"fmt"
	"strings"
)

// Transport is a containers/image transport name, as bootc names them.
type Transport string

const (
	Registry          Transport = "registry"
	OCI               Transport = "oci"
	OCIArchive        Transport = "oci-archive"
	DockerArchive     Transport = "docker-archive"
	ContainersStorage Transport = "containers-storage"
	Dir               Transport = "dir"
)

// Ref is a transport plus a transport-specific name. For Registry the name
// has no leading "//" (e.g. "quay.io/example/os:latest").
type Ref struct {
	Transport Transport
	Name      string
}

// Parse accepts "docker://NAME", "registry:NAME", "oci:PATH[:TAG]",
// "oci-archive:PATH[:TAG]", "docker-archive:PATH", "containers-storage:NAME"
// and "dir:PATH".
func Parse(s string) (Ref, error) {
	t, name, ok := strings.Cut(s, ":")
	if !ok || name == "" {
		return Ref{}, fmt.Errorf("image reference %q has no transport: write it as TRANSPORT:NAME, e.g. docker://quay.io/example/os:latest or oci-archive:/path/image.tar", s)
	}
	switch Transport(t) {
	case "docker":
		rest, ok := strings.CutPrefix(name, "//")
		if !ok || rest == "" {
			return Ref{}, fmt.Errorf("image reference %q: the docker transport needs docker://NAME", s)
		}
		return Ref{Transport: Registry, Name: rest}, nil
	case Registry:
		return Ref{Transport: Registry, Name: strings.TrimPrefix(name, "//")}, nil
	case OCI, OCIArchive, DockerArchive, ContainersStorage, Dir:
		return Ref{Transport: Transport(t), Name: name}, nil
	}
	return Ref{}, fmt.Errorf("image reference %q: unknown transport %q (known: docker, registry, oci, oci-archive, docker-archive, containers-storage, dir)", s, t)
}

// ParseTransport validates a --target-transport value.
func ParseTransport(s string) (Transport, error) {
	switch Transport(s) {
	case "docker":
		return Registry, nil
	case Registry, OCI, OCIArchive, DockerArchive, ContainersStorage, Dir:
		return Transport(s), nil
	}
	return "", fmt.Errorf("unknown transport %q (known: registry, oci, oci-archive, docker-archive, containers-storage, dir)", s)
}

// prefix is how ostree-ext prints a transport in front of a name.
func (t Transport) prefix() string {
	if t == Registry {
		return "docker://"
	}
	return string(t) + ":"
}

// String is the containers/image spelling: docker://NAME, oci:PATH, ...
// It is what alltransports.ParseImageName accepts.
func (r Ref) String() string { return r.Transport.prefix() + r.Name }

// Origin is the origin file's container-image-reference as bootc writes it.
// signed selects ostree-image-signed (signature policy enforced); otherwise
// the unverified forms are used.
func (r Ref) Origin(signed bool) string {
	if signed {
		return "ostree-image-signed:" + r.String()
	}
	if r.Transport == Registry {
		return "ostree-unverified-registry:" + r.Name
	}
	return "ostree-unverified-image:" + r.String()
}

// OstreeRef is the ref under which bootc keeps the merged image commit.
func (r Ref) OstreeRef() (string, error) {
	esc, err := EscapeForRef(r.String())
	if err != nil {
		return "", err
	}
	return "ostree/container/image/" + esc, nil
}

// EscapeForRef maps an arbitrary string into ostree's ref alphabet with
// ostree-rs-ext's scheme: alphanumerics and '-' pass, '_' doubles, '/' passes
// only after an alphanumeric and when more follows, anything else is _XX_.
func EscapeForRef(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("cannot escape an empty string into an ostree ref")
	}
	var b strings.Builder
	runes := []rune(s)
	prevAlnum := false
	for i, c := range runes {
		alnum := c < 0x80 && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9')
		switch {
		case c == 0:
			return "", fmt.Errorf("NUL in %q cannot go into an ostree ref", s)
		case alnum:
			b.WriteRune(c)
		case c == '/' && prevAlnum && i+1 < len(runes):
			b.WriteRune(c)
		case c == '-':
			b.WriteRune(c)
		case c == '_':
			b.WriteString("__")
		default:
			fmt.Fprintf(&b, "_%02X_", c)
		}
		prevAlnum = alnum
	}
	return b.String(), nil
}
