package registry

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeTinyOCI writes a one-layer OCI image layout (tag "latest") holding
// /hello.txt, and returns the layout directory.
func writeTinyOCI(t *testing.T, dir string) string {
	t.Helper()
	layout := filepath.Join(dir, "layout")
	blobs := filepath.Join(layout, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	putBlob := func(data []byte) (string, int) {
		sum := sha256.Sum256(data)
		h := hex.EncodeToString(sum[:])
		if err := os.WriteFile(filepath.Join(blobs, h), data, 0o644); err != nil {
			t.Fatal(err)
		}
		return "sha256:" + h, len(data)
	}

	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	content := []byte("hello from the bootlace test bed\n")
	if err := tw.WriteHeader(&tar.Header{Name: "hello.txt", Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	diffSum := sha256.Sum256(tarBuf.Bytes())
	var gzBuf bytes.Buffer
	gw := gzip.NewWriter(&gzBuf)
	if _, err := gw.Write(tarBuf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := gw.Close(); err != nil {
		t.Fatal(err)
	}
	layerDigest, layerSize := putBlob(gzBuf.Bytes())

	mustJSON := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	config := mustJSON(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       map[string]any{"Labels": map[string]string{"containers.bootc": "1"}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(diffSum[:])}},
	})
	configDigest, configSize := putBlob(config)
	man := mustJSON(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": configDigest, "size": configSize},
		"layers":        []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layerDigest, "size": layerSize}},
	})
	manDigest, manSize := putBlob(man)
	index := mustJSON(map[string]any{
		"schemaVersion": 2,
		"manifests": []any{map[string]any{
			"mediaType":   "application/vnd.oci.image.manifest.v1+json",
			"digest":      manDigest,
			"size":        manSize,
			"annotations": map[string]string{"org.opencontainers.image.ref.name": "latest"},
		}},
	})
	if err := os.WriteFile(filepath.Join(layout, "index.json"), index, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(layout, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return layout
}

// tarDir writes dir's contents as an uncompressed tar (an oci-archive).
func tarDir(t *testing.T, dir, out string) {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

func processGone(pid int) bool {
	err := syscall.Kill(pid, 0)
	return errors.Is(err, syscall.ESRCH)
}

func skopeoInspect(t *testing.T, r *Registry, args ...string) (map[string]any, error) {
	t.Helper()
	cmd := exec.Command("skopeo", append([]string{"--registries-conf", filepath.Join(r.Dir, "registries.conf"), "inspect"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, errors.New(err.Error() + ": " + stderr.String())
	}
	var doc map[string]any
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, err
	}
	return doc, nil
}

func TestPushAndInspect(t *testing.T) {
	if _, err := exec.LookPath("skopeo"); err != nil {
		t.Fatalf("skopeo is needed to read images back: %v (apt-get install skopeo)", err)
	}
	tmp := t.TempDir()
	layout := writeTinyOCI(t, tmp)
	archive := filepath.Join(tmp, "image.tar")
	tarDir(t, layout, archive)

	tests := []struct {
		name string
		opts Options
		src  string
	}{
		{"tls+auth oci-archive", Options{}, "oci-archive:" + archive + ":latest"},
		{"tls+auth oci layout", Options{User: "alice", Password: "s3cret"}, "oci:" + layout + ":latest"},
		{"plain http, no auth", Options{NoTLS: true, NoAuth: true}, "oci-archive:" + archive},
		{"plain http with auth", Options{NoTLS: true}, "oci-archive:" + archive},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			start := time.Now()
			r, err := Start(ctx, t.TempDir(), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = r.Stop() })
			t.Logf("registry up on %s in %v", r.Addr, time.Since(start))

			start = time.Now()
			dig, err := r.Push(ctx, tc.src, "testbed/tiny:v1")
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("pushed %s in %v", dig, time.Since(start))
			if !strings.HasPrefix(dig, "sha256:") {
				t.Fatalf("digest %q", dig)
			}

			args := []string{}
			if r.TLS {
				args = append(args, "--cert-dir", r.CertDir)
			} else {
				args = append(args, "--tls-verify=false")
			}
			if r.Auth {
				args = append(args, "--creds", r.User+":"+r.Password)
			}
			doc, err := skopeoInspect(t, r, append(args, r.Ref("testbed/tiny:v1"))...)
			if err != nil {
				t.Fatalf("skopeo inspect: %v", err)
			}
			if doc["Digest"] != dig {
				t.Errorf("skopeo sees digest %v, Push returned %s", doc["Digest"], dig)
			}
			if labels, _ := doc["Labels"].(map[string]any); labels["containers.bootc"] != "1" {
				t.Errorf("labels = %v", doc["Labels"])
			}

			if r.Auth {
				// The auth file works as well as --creds.
				authArgs := append(args[:len(args)-2:len(args)-2], "--authfile", r.AuthFile, r.Ref("testbed/tiny:v1"))
				if _, err := skopeoInspect(t, r, authArgs...); err != nil {
					t.Errorf("skopeo inspect with --authfile: %v", err)
				}
				// No credentials: refused.
				noCreds := append(args[:len(args)-2:len(args)-2], "--no-creds", r.Ref("testbed/tiny:v1"))
				if _, err := skopeoInspect(t, r, noCreds...); err == nil {
					t.Error("skopeo inspect without credentials succeeded")
				}
				client, err := r.HTTPClient()
				if err != nil {
					t.Fatal(err)
				}
				resp, err := client.Get(r.BaseURL() + "/v2/testbed/tiny/manifests/v1")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized {
					t.Errorf("anonymous manifest GET: status %d, want 401", resp.StatusCode)
				}
			}
		})
	}
}

func TestStopLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	r, err := Start(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	pid := r.PID
	if processGone(pid) {
		t.Fatalf("registry pid %d not running after Start", pid)
	}
	loaded, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Addr != r.Addr || loaded.CertDir != r.CertDir || loaded.Password != r.Password {
		t.Errorf("Load = %+v, want the started registry %+v", loaded, r)
	}
	if err := loaded.Stop(); err != nil || processGone(pid) {
		t.Fatalf("Stop on a loaded registry must not stop the owner's process (err %v)", err)
	}

	start := time.Now()
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped in %v", time.Since(start))
	if !processGone(pid) {
		t.Errorf("registry pid %d still exists after Stop", pid)
	}
	if err := r.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	client, err := r.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := client.Get(r.BaseURL() + "/v2/"); err == nil {
		resp.Body.Close()
		t.Errorf("registry still answers on %s after Stop", r.Addr)
	}
	if _, err := os.Stat(filepath.Join(dir, stateFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("state file left after Stop: %v", err)
	}
}

func TestCertDirHoldsOnlyCA(t *testing.T) {
	r := StartForTest(t)
	entries, err := os.ReadDir(r.CertDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "ca.crt" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("cert dir holds %v, want only ca.crt", names)
	}
}

func TestStartErrors(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"missing binary", Options{Binary: "/nonexistent/docker-registry"}, "install Debian's docker-registry"},
		{"bad user", Options{User: "a:b"}, "must not contain"},
		{"binary that exits", Options{Binary: "/bin/false", StartTimeout: 5 * time.Second}, "did not come up"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Start(context.Background(), t.TempDir(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}
