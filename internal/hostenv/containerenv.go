// Package hostenv finds out where bootlace runs: on a host, or inside a
// container started to install that container's own image (the bootc
// "podman run --privileged --pid=host ... IMAGE bootlace install" idiom).
// It reads facts (container markers, /run/.containerenv, capabilities, the
// PID and user namespaces, /dev, the host's containers-storage), decides
// whether an in-container install can work, and names the podman flag that
// is missing when it cannot. Every path is taken relative to an injectable
// root so tests can build the facts in a directory.
package hostenv

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// ContainerEnv is podman's /run/.containerenv. Podman writes the keys below
// for --privileged containers and an empty file otherwise; other engines
// (and later podman versions) may add keys, which land in Extra.
type ContainerEnv struct {
	Engine  string // e.g. "podman-4.3.1"
	Name    string // the container's name
	ID      string // the container's ID
	Image   string // the image name the container was started from
	ImageID string // the image's ID in the engine's storage (its config digest, hex)
	// Rootless is rootless=1: the engine runs in a user namespace.
	Rootless bool
	// GraphRootMounted is graphRootMounted=1: the engine's storage is
	// mounted into the container at the same path.
	GraphRootMounted bool
	Extra            map[string]string
}

// Empty reports whether the file carried no keys at all, which is what
// podman writes for a container without --privileged.
func (e *ContainerEnv) Empty() bool {
	return e.Engine == "" && e.Name == "" && e.ID == "" && e.Image == "" && e.ImageID == "" &&
		!e.Rootless && !e.GraphRootMounted && len(e.Extra) == 0
}

// maxContainerEnv bounds what is read: podman's file is a few hundred bytes.
const maxContainerEnv = 64 << 10

// ParseContainerEnv parses the KEY=VALUE lines of a .containerenv file.
// Values are either Go-quoted strings (podman formats them with %q) or bare
// words; blank lines and # comments are skipped, unknown keys are kept in
// Extra. A malformed line is an error naming its number.
func ParseContainerEnv(data []byte) (*ContainerEnv, error) {
	if len(data) > maxContainerEnv {
		return nil, fmt.Errorf("%d bytes, more than the %d a container environment file can hold", len(data), maxContainerEnv)
	}
	env := &ContainerEnv{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxContainerEnv)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, raw, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" {
			return nil, fmt.Errorf("line %d: %q is not KEY=VALUE", n, line)
		}
		val, err := unquote(strings.TrimSpace(raw))
		if err != nil {
			return nil, fmt.Errorf("line %d: value of %s: %w", n, key, err)
		}
		switch key {
		case "engine":
			env.Engine = val
		case "name":
			env.Name = val
		case "id":
			env.ID = val
		case "image":
			env.Image = val
		case "imageid":
			env.ImageID = val
		case "rootless":
			env.Rootless, err = flag(val)
		case "graphRootMounted":
			env.GraphRootMounted, err = flag(val)
		default:
			if env.Extra == nil {
				env.Extra = map[string]string{}
			}
			env.Extra[key] = val
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: value of %s: %w", n, key, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return env, nil
}

func unquote(s string) (string, error) {
	if strings.HasPrefix(s, `"`) {
		return strconv.Unquote(s)
	}
	return s, nil
}

// flag reads podman's 0/1 booleans (and true/false, which other writers use).
func flag(s string) (bool, error) {
	switch s {
	case "1", "true":
		return true, nil
	case "0", "false", "":
		return false, nil
	}
	return false, fmt.Errorf("%q is not 0 or 1", s)
}
