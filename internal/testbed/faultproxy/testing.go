package faultproxy

import (
	"path/filepath"
	"testing"

	"github.com/bootlace/bootlace/internal/testbed/registry"
)

// StartForTest puts a proxy with rules in front of reg and stops it when
// the test ends.
func StartForTest(t testing.TB, reg *registry.Registry, rules ...Rule) *Proxy {
	t.Helper()
	opts := Options{Upstream: reg.Addr, Dir: t.TempDir()}
	if reg.TLS {
		opts.UpstreamCA = filepath.Join(reg.CertDir, "ca.crt")
	}
	p, err := Start(opts, rules)
	if err != nil {
		t.Fatalf("starting fault proxy: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("%v", err)
		}
	})
	return p
}
