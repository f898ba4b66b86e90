package registry

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/transports/alltransports"
	"go.podman.io/image/v5/types"
)

// SystemContext returns a containers/image context for talking to this
// registry without touching host configuration or caches: the blob-info
// cache, registries.conf and registries.d all point into the registry's Dir
// (Start creates them).
func (r *Registry) SystemContext() *types.SystemContext {
	sc := isolatedContext(r.Dir)
	if r.TLS {
		sc.DockerCertPath = r.CertDir
	} else {
		sc.DockerInsecureSkipTLSVerify = types.OptionalBoolTrue
	}
	if r.Auth {
		sc.DockerAuthConfig = &types.DockerAuthConfig{Username: r.User, Password: r.Password}
	}
	return sc
}

// isolatedContext keeps containers/image away from the host's
// /var/lib/containers/cache and /etc/containers configuration.
func isolatedContext(dir string) *types.SystemContext {
	return &types.SystemContext{
		BlobInfoCacheDir:            filepath.Join(dir, "blob-info-cache"),
		SystemRegistriesConfPath:    filepath.Join(dir, "registries.conf"), // absent: defaults
		SystemRegistriesConfDirPath: filepath.Join(dir, "registries.conf.d"),
		RegistriesDirPath:           filepath.Join(dir, "registries.d"),
		AuthFilePath:                filepath.Join(dir, "no-auth.json"), // absent: no host creds
	}
}

// prepareIsolation creates what isolatedContext points at: an explicitly
// configured registries.conf must exist, and the cache directory must too.
func prepareIsolation(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "blob-info-cache"), 0o700); err != nil {
		return fmt.Errorf("creating blob-info cache: %w", err)
	}
	conf := filepath.Join(dir, "registries.conf")
	if err := os.WriteFile(conf, []byte("# bootlace test bed: no mirrors, no search registries\n"), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", conf, err)
	}
	return nil
}

// PolicyContext accepts any image; test registries carry no signatures.
// Built in code so the host's /etc/containers/policy.json is never read.
func PolicyContext() (*signature.PolicyContext, error) {
	pc, err := signature.NewPolicyContext(&signature.Policy{
		Default: signature.PolicyRequirements{signature.NewPRInsecureAcceptAnything()},
	})
	if err != nil {
		return nil, fmt.Errorf("creating signature policy: %w", err)
	}
	return pc, nil
}

// Push copies srcRef (any containers/image transport, e.g.
// "oci-archive:/path/image.tar" or "oci:/path/layout:tag") to repoTag in this
// registry and returns the digest of the manifest as stored there.
func (r *Registry) Push(ctx context.Context, srcRef, repoTag string) (string, error) {
	src, err := alltransports.ParseImageName(srcRef)
	if err != nil {
		return "", fmt.Errorf("parsing source %q: %w", srcRef, err)
	}
	dst, err := docker.ParseReference("//" + r.Addr + "/" + strings.TrimPrefix(repoTag, "/"))
	if err != nil {
		return "", fmt.Errorf("parsing destination %q: %w", repoTag, err)
	}
	if err := prepareIsolation(r.Dir); err != nil {
		return "", err
	}
	pc, err := PolicyContext()
	if err != nil {
		return "", err
	}
	defer func() { _ = pc.Destroy() }()

	out, err := copy.Image(ctx, pc, dst, src, &copy.Options{
		SourceCtx:      isolatedContext(r.Dir),
		DestinationCtx: r.SystemContext(),
	})
	if err != nil {
		return "", fmt.Errorf("pushing %s to %s: %w", srcRef, r.Ref(repoTag), err)
	}
	d, err := manifest.Digest(out)
	if err != nil {
		return "", fmt.Errorf("digesting pushed manifest: %w", err)
	}
	return d.String(), nil
}
