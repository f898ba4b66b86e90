package registry

import (
	"context"
	"testing"
)

// StartForTest starts a TLS + auth registry in a test temp dir and stops it
// when the test ends. It fails the test if the registry cannot start.
func StartForTest(t testing.TB) *Registry {
	t.Helper()
	r, err := Start(context.Background(), t.TempDir(), Options{})
	if err != nil {
		t.Fatalf("starting loopback registry: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Errorf("stopping registry: %v", err)
		}
	})
	return r
}
