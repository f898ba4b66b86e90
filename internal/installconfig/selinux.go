package installconfig

import (
	"fmt"
	"path"
	"strings"

	"github.com/bootlace/bootlace/internal/errs"
)

// selinuxConfigPaths are searched in order; usr/etc stands in for etc in
// staged ostree trees.
var selinuxConfigPaths = []string{
	"etc/selinux/config",
	"usr/etc/selinux/config",
}

// Policy is the image's SELinux setup.
type Policy struct {
	// Enabled is true when the image ships a loadable policy (a config
	// naming a SELINUXTYPE whose policy directory exists) and does not set
	// SELINUX=disabled, i.e. when the target must be labelled.
	Enabled bool
	// Mode is SELINUX= (enforcing, permissive, disabled), "" without config.
	Mode string
	// Type is SELINUXTYPE=, e.g. targeted or default.
	Type string
}

const opSELinux = "reading SELinux config"

// SELinux decides SELinux from the image tree, never from the host.
func SELinux(root string) (Policy, error) {
	t, err := openTree(root)
	if err != nil {
		return Policy{}, err
	}
	defer t.Close()
	for _, p := range selinuxConfigPaths {
		data, err := t.readFile(p)
		if notExist(err) {
			continue
		}
		if err != nil {
			return Policy{}, errs.New(errs.Image, opSELinux, "/"+p, err, "")
		}
		pol, err := parseSELinuxConfig(string(data))
		if err != nil {
			return Policy{}, errs.New(errs.Image, opSELinux, "/"+p, err, "fix /etc/selinux/config in the image")
		}
		if pol.Mode != "disabled" && pol.Type != "" {
			// The policy directory sits next to the config that names it.
			dir := path.Join(path.Dir(p), pol.Type, "policy")
			ok, err := t.isDir(dir)
			if err != nil {
				return Policy{}, errs.New(errs.Image, opSELinux, "/"+dir, err, "")
			}
			pol.Enabled = ok
		}
		return pol, nil
	}
	return Policy{}, nil
}

// parseSELinuxConfig reads the shell-like KEY=value file libselinux reads.
func parseSELinuxConfig(src string) (Policy, error) {
	var pol Policy
	for i, raw := range strings.Split(src, "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue // libselinux ignores lines it does not understand
		}
		v = strings.Trim(strings.TrimSpace(v), `"'`)
		switch strings.TrimSpace(k) {
		case "SELINUX":
			switch v {
			case "enforcing", "permissive", "disabled":
				pol.Mode = v
			default:
				return Policy{}, fmt.Errorf("line %d: invalid SELINUX=%q, expected enforcing, permissive or disabled", i+1, v)
			}
		case "SELINUXTYPE":
			if v == "" || strings.ContainsAny(v, "/") || v == "." || v == ".." {
				return Policy{}, fmt.Errorf("line %d: invalid SELINUXTYPE=%q", i+1, v)
			}
			pol.Type = v
		}
	}
	return pol, nil
}
