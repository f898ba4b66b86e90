package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootlace/bootlace/internal/testbed/registry"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/signature/signer"
	"go.podman.io/image/v5/signature/sigstore"
	"go.podman.io/image/v5/transports/alltransports"
	"go.podman.io/image/v5/types"
)

// sigstoreRegistriesD makes containers/image write and read sigstore
// signatures as OCI attachments next to the image in the registry.
const sigstoreRegistriesD = "default-docker:\n  use-sigstore-attachments: true\n"

// keyPair writes a fresh sigstore (cosign-format) key pair into dir.
func keyPair(t *testing.T, dir, name string) (priv, pub string, pass []byte) {
	t.Helper()
	pass = []byte("bootlace-test-" + name)
	kp, err := sigstore.GenerateKeyPair(pass)
	if err != nil {
		t.Fatalf("generating a sigstore key pair: %v", err)
	}
	priv, pub = filepath.Join(dir, name+".key"), filepath.Join(dir, name+".pub")
	if err := os.WriteFile(priv, kp.PrivateKey, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pub, kp.PublicKey, 0o644); err != nil {
		t.Fatal(err)
	}
	return priv, pub, pass
}

// pushSigned copies the fixture to repoTag in reg and attaches a sigstore
// signature made with the private key.
func pushSigned(t *testing.T, reg *registry.Registry, archive, repoTag, priv string, pass []byte, regd string) {
	t.Helper()
	ctx := context.Background()
	sgn, err := sigstore.NewSigner(sigstore.WithPrivateKeyFile(priv, pass))
	if err != nil {
		t.Fatalf("loading the signing key: %v", err)
	}
	defer sgn.Close()
	src, err := alltransports.ParseImageName("oci-archive:" + archive)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := docker.ParseReference("//" + reg.Addr + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := registry.PolicyContext()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pc.Destroy() }()
	dstCtx := reg.SystemContext()
	dstCtx.RegistriesDirPath = regd
	srcCtx := &types.SystemContext{BlobInfoCacheDir: t.TempDir(), RegistriesDirPath: regd}
	start := time.Now()
	// The Docker schema 2 form gives the signed image its own manifest
	// digest: sigstore attachments hang off the digest, so an "unsigned" tag
	// of the same manifest would carry the signature too.
	if _, err := copy.Image(ctx, pc, dst, src, &copy.Options{SourceCtx: srcCtx, DestinationCtx: dstCtx,
		Signers: []*signer.Signer{sgn}, ForceManifestMIMEType: manifest.DockerV2Schema2MediaType}); err != nil {
		t.Fatalf("pushing a signed copy to %s: %v", repoTag, err)
	}
	t.Logf("pushed and signed %s in %s", repoTag, time.Since(start).Round(100*time.Millisecond))
}

// withRegistriesD runs bootlace in a private mount namespace whose
// /etc/containers/registries.d enables sigstore attachments (bootlace, like
// bootc, reads the host's registries.d and has no flag for another one).
func withRegistriesD(t *testing.T) []string {
	t.Helper()
	d := t.TempDir()
	for _, sub := range []string{"up", "work"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	setup := `set -e
mount -t overlay overlay -o lowerdir=/etc,upperdir=` + d + `/up,workdir=` + d + `/work /etc
mkdir -p /etc/containers/registries.d
printf '` + strings.ReplaceAll(sigstoreRegistriesD, "\n", `\n`) + `' > /etc/containers/registries.d/zz-bootlace-test.yaml
exec "$@"
`
	return []string{"unshare", "--mount", "--propagation", "private", "sh", "-c", setup, "sh"}
}

// writePolicy writes a policy.json: reject by default, and for the test
// repository the given requirement.
func writePolicy(t *testing.T, dir, name string, scopeReqs map[string][]signature.PolicyRequirement, def signature.PolicyRequirements) string {
	t.Helper()
	pol := &signature.Policy{Default: def, Transports: map[string]signature.PolicyTransportScopes{"docker": {}}}
	for scope, reqs := range scopeReqs {
		pol.Transports["docker"][scope] = reqs
	}
	b, err := json.MarshalIndent(pol, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSignaturePolicy(t *testing.T) {
	requireRoot(t)
	archive := fixture(t, "bookworm")
	reg := pushedFixture(t, "unsigned")
	dir := t.TempDir()
	regd := filepath.Join(dir, "registries.d")
	if err := os.MkdirAll(regd, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(regd, "sigstore.yaml"), []byte(sigstoreRegistriesD), 0o644); err != nil {
		t.Fatal(err)
	}
	priv, pub, pass := keyPair(t, dir, "signer")
	_, otherPub, _ := keyPair(t, dir, "other")
	pushSigned(t, reg, archive, "bootlace/fixture:signed", priv, pass, regd)

	repo := reg.Addr + "/bootlace/fixture"
	requireKey := func(pubPath string) map[string][]signature.PolicyRequirement {
		req, err := signature.NewPRSigstoreSigned(signature.PRSigstoreSignedWithKeyPath(pubPath),
			signature.PRSigstoreSignedWithSignedIdentity(signature.NewPRMMatchRepoDigestOrExact()))
		if err != nil {
			t.Fatal(err)
		}
		return map[string][]signature.PolicyRequirement{repo: {req}}
	}
	reject := signature.PolicyRequirements{signature.NewPRReject()}
	signedPolicy := writePolicy(t, dir, "signed.json", requireKey(pub), reject)
	otherPolicy := writePolicy(t, dir, "other.json", requireKey(otherPub), reject)
	acceptAll := writePolicy(t, dir, "accept.json", nil, signature.PolicyRequirements{signature.NewPRInsecureAcceptAnything()})

	disk := sparseDisk(t, 4<<30)
	wrap := withRegistriesD(t)
	dryRun := func(tag, policy string, extra ...string) ([]byte, string, int) {
		args := append([]string{"install", "to-disk", "--bound-images", "skip", "--via-loopback", "--dry-run",
			"--source-imgref", "docker://" + repo + ":" + tag,
			"--cert-dir", reg.CertDir, "--authfile", reg.AuthFile, "--signature-policy", policy}, extra...)
		return bootlaceRun(t, wrap, append(args, disk)...)
	}
	tests := []struct {
		name, tag, policy string
		extra             []string
		code              int
		stderr            string // expected in the error output
		origin            string // expected prefix of the plan's origin
	}{
		{name: "signed image accepted", tag: "signed", policy: signedPolicy, code: 0,
			origin: "ostree-unverified-registry:" + repo + ":signed"},
		{name: "unsigned image refused", tag: "unsigned", policy: signedPolicy, code: 5, stderr: "no signature"},
		{name: "signed by another key refused", tag: "signed", policy: otherPolicy, code: 5, stderr: "signature"},
		{name: "enforce refuses accept-anything", tag: "signed", policy: acceptAll, extra: []string{"--enforce-container-sigpolicy"},
			code: 5, stderr: "insecureAcceptAnything"},
		{name: "enforce with a signing policy records a signed origin", tag: "signed", policy: signedPolicy,
			extra: []string{"--enforce-container-sigpolicy"}, code: 0, origin: "ostree-image-signed:docker://" + repo + ":signed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loops, mounts := hostState(t)
			out, stderr, code := dryRun(tt.tag, tt.policy, tt.extra...)
			checkHostUnchanged(t, loops, mounts)
			if code != tt.code {
				t.Fatalf("exit %d, want %d:\n%s", code, tt.code, tail(stderr, 30))
			}
			if tt.stderr != "" {
				if !strings.Contains(stderr, tt.stderr) {
					t.Errorf("error output lacks %q:\n%s", tt.stderr, tail(stderr, 10))
				}
				t.Logf("refused: %s", tail(strings.TrimSpace(stderr), 2))
			}
			if tt.origin != "" {
				var pl plan
				if err := json.Unmarshal(out, &pl); err != nil {
					t.Fatalf("parsing the plan: %v\n%s", err, out)
				}
				if !strings.HasPrefix(pl.Image.Origin, tt.origin) {
					t.Errorf("plan origin %q, want %q", pl.Image.Origin, tt.origin)
				}
			}
		})
	}
	t.Run("real install of the signed image", func(t *testing.T) {
		disk := sparseDisk(t, 8<<30)
		loops, mounts := hostState(t)
		out, stderr, code := bootlaceRun(t, wrap, "install", "to-disk", "--bound-images", "skip", "--via-loopback",
			"--source-imgref", "docker://"+repo+":signed", "--cert-dir", reg.CertDir, "--authfile", reg.AuthFile,
			"--signature-policy", signedPolicy, "--enforce-container-sigpolicy", "--json", disk)
		if code != 0 {
			t.Fatalf("signed install failed (exit %d):\n%s", code, tail(stderr, 40))
		}
		checkHostUnchanged(t, loops, mounts)
		rep := parseReport(t, out)
		if want := "ostree-image-signed:docker://" + repo + ":signed"; rep.Origin != want {
			t.Errorf("report origin %q, want %q", rep.Origin, want)
		}
	})
}
