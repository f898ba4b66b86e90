package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/imgref"
	"github.com/bootlace/bootlace/internal/layer/layertest"
	digest "github.com/opencontainers/go-digest"
)

// writeLayout writes a one-layer OCI image layout with the given labels.
func writeLayout(t *testing.T, labels map[string]string) (dir string, layerDigest digest.Digest) {
	t.Helper()
	return writeLayoutWith(t, labels, "")
}

// writeLayoutWith adds a file with payload to the layer when it is not empty.
func writeLayoutWith(t *testing.T, labels map[string]string, payload string) (dir string, layerDigest digest.Digest) {
	t.Helper()
	dir = t.TempDir()
	entries := []layertest.Entry{layertest.File("./usr/lib/os-release", "ID=test\n")}
	if payload != "" {
		entries = append(entries, layertest.File("./usr/share/payload", payload))
	}
	raw := layertest.MustTar(t, entries...)
	gz, err := layertest.Gzip(raw)
	if err != nil {
		t.Fatal(err)
	}
	put := func(b []byte) digest.Digest {
		d := digest.FromBytes(b)
		p := filepath.Join(dir, "blobs", "sha256", d.Encoded())
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return d
	}
	layerDigest = put(gz)
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Labels": labels},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{digest.FromBytes(raw).String()}},
	})
	cfgD := put(cfg)
	man, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfgD, "size": len(cfg)},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layerDigest, "size": len(gz)}},
	})
	manD := put(man)
	idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []any{map[string]any{
		"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manD, "size": len(man),
		"annotations": map[string]string{"org.opencontainers.image.ref.name": "latest"}}}})
	if err := os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, layerDigest
}

func TestFetchOCILayoutAndReuse(t *testing.T) {
	layout, ld := writeLayout(t, map[string]string{"containers.bootc": "1"})
	store, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	src := imgref.Ref{Transport: imgref.OCI, Name: layout + ":latest"}
	im, err := Fetch(context.Background(), src, store, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Layers) != 1 || im.Layers[0].Digest != ld || !store.Has(ld) {
		t.Fatalf("layers %+v", im.Layers)
	}
	if im.Config.Config.Labels["containers.bootc"] != "1" {
		t.Fatalf("labels %v", im.Config.Config.Labels)
	}
	again, err := store.LoadImage()
	if err != nil {
		t.Fatal(err)
	}
	if again.ManifestDigest != im.ManifestDigest || string(again.ConfigJSON) != string(im.ConfigJSON) {
		t.Fatal("reloaded image differs")
	}
	// A second fetch reuses the stored blob even when the source lost it.
	if err := os.Remove(filepath.Join(layout, "blobs", "sha256", ld.Encoded())); err != nil {
		t.Fatal(err)
	}
	if _, err := Fetch(context.Background(), src, store, Options{}); err != nil {
		t.Fatalf("re-fetch with the blob already stored: %v", err)
	}
}

func TestFetchCorruptBlob(t *testing.T) {
	layout, ld := writeLayout(t, nil)
	p := filepath.Join(layout, "blobs", "sha256", ld.Encoded())
	b, _ := os.ReadFile(p)
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	store, _ := OpenStore(t.TempDir())
	_, err := Fetch(context.Background(), imgref.Ref{Transport: imgref.OCI, Name: layout}, store, Options{Retries: 1})
	if err == nil || errs.KindOf(err) != errs.Fetch {
		t.Fatalf("corrupt blob: %v (kind %v)", err, errs.KindOf(err))
	}
	if store.Has(ld) {
		t.Fatal("corrupt blob was stored")
	}
	left, _ := os.ReadDir(filepath.Join(store.Dir, "blobs", "sha256"))
	if len(left) != 0 {
		t.Fatalf("partial files left: %v", left)
	}
}

func TestVerifyingReader(t *testing.T) {
	data := []byte("hello layer")
	good := digest.FromBytes(data)
	for _, tt := range []struct {
		name string
		want digest.Digest
		ok   bool
	}{{"match", good, true}, {"mismatch", digest.FromString("other"), false}} {
		v := &verifyingReader{rc: io.NopCloser(bytes.NewReader(data)), h: sha256.New(), want: tt.want}
		_, err := io.ReadAll(v)
		if (err == nil) != tt.ok {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}

func TestPolicy(t *testing.T) {
	dir := t.TempDir()
	accept := filepath.Join(dir, "accept.json")
	reject := filepath.Join(dir, "reject.json")
	os.WriteFile(accept, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644)
	os.WriteFile(reject, []byte(`{"default":[{"type":"reject"}]}`), 0o644)
	tests := []struct {
		name    string
		opts    Options
		wantErr bool
	}{
		{"accept", Options{SignaturePolicy: accept}, false},
		{"enforce refuses accept-anything", Options{SignaturePolicy: accept, EnforceSigPolicy: true}, true},
		{"enforce with reject policy", Options{SignaturePolicy: reject, EnforceSigPolicy: true}, false},
		{"missing file", Options{SignaturePolicy: filepath.Join(dir, "none.json")}, true},
	}
	for _, tt := range tests {
		pc, _, err := PolicyContext(tt.opts)
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: err %v", tt.name, err)
		}
		if err != nil && errs.KindOf(err) != errs.Fetch {
			t.Errorf("%s: kind %v", tt.name, errs.KindOf(err))
		}
		if pc != nil {
			pc.Destroy()
		}
	}
	// A policy that rejects everything stops the fetch with exit code 5.
	layout, _ := writeLayout(t, nil)
	store, _ := OpenStore(t.TempDir())
	_, err := Fetch(context.Background(), imgref.Ref{Transport: imgref.OCI, Name: layout}, store, Options{SignaturePolicy: reject})
	if errs.KindOf(err) != errs.Fetch || !strings.Contains(fmt.Sprint(err), "signature") {
		t.Fatalf("rejecting policy: %v", err)
	}
}

// TestPull checks the contract assemble relies on: Layer returns once the
// blob is verified in the store, and a failed pull fails the waiters.
func TestPull(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		corrupt bool
	}{{"ok", false}, {"corrupt blob", true}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			layout, ld := writeLayout(t, map[string]string{"containers.bootc": "1"})
			if tt.corrupt {
				p := filepath.Join(layout, "blobs", "sha256", ld.Encoded())
				b, _ := os.ReadFile(p)
				b[len(b)/2] ^= 0xff
				if err := os.WriteFile(p, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			store, _ := OpenStore(t.TempDir())
			src, err := Open(ctx, imgref.Ref{Transport: imgref.OCI, Name: layout}, store.CacheDir(), Options{Retries: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			p := src.Start(ctx, store)
			err = p.Layer(ctx, 0)
			if tt.corrupt {
				if errs.KindOf(err) != errs.Fetch {
					t.Fatalf("Layer(0) of a corrupt blob: %v (kind %v), want a fetch error", err, errs.KindOf(err))
				}
			} else if err != nil || !store.Has(ld) {
				t.Fatalf("Layer(0): %v, stored %v", err, store.Has(ld))
			}
			if err := p.Layer(ctx, 1); err == nil {
				t.Error("Layer(1) of a one-layer image succeeded")
			}
			im, err := p.Wait()
			if tt.corrupt != (err != nil) || tt.corrupt != (im == nil) {
				t.Fatalf("Wait: %v, %v", im, err)
			}
		})
	}
}
