// Package registry runs Debian's docker-registry on loopback for tests: a free
// port on 127.0.0.1, a throwaway CA and server certificate, htpasswd (bcrypt)
// auth, and helpers to push images to it with containers/image.
package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// DefaultBinary is where Debian's docker-registry package installs the server.
const DefaultBinary = "/usr/bin/docker-registry"

// Options select the registry's security features. The zero value gives the
// realistic setup: TLS and password auth.
type Options struct {
	// NoTLS serves plain HTTP; clients then need "tls-verify=false".
	NoTLS bool
	// NoAuth disables htpasswd auth.
	NoAuth bool
	// User and Password default to "bootlace" and a random password.
	User, Password string
	// Binary overrides DefaultBinary.
	Binary string
	// StartTimeout bounds the wait for the first answer (default 30 s).
	StartTimeout time.Duration
}

// Registry is a running (or stopped) loopback registry.
type Registry struct {
	Addr     string // 127.0.0.1:PORT
	Dir      string // working directory: config, storage, certificates, log
	CertDir  string // holds only ca.crt, for --cert-dir / DockerCertPath; "" without TLS
	User     string // "" without auth
	Password string
	AuthFile string // containers auth.json with the credentials; "" without auth
	LogPath  string // the server's stdout and stderr
	TLS      bool
	Auth     bool
	PID      int

	proc *process // nil for a registry returned by Load
}

// process is one run of the server.
type process struct {
	pid      int
	exited   chan struct{} // closed when the process has been reaped
	waitErr  error
	stopOnce sync.Once
	stopErr  error
}

// state is what Start records in Dir so that another process (the CLI's
// push command) can talk to a running registry.
const stateFile = "registry.json"

// Start runs a registry whose files live under dir (created if needed). The
// process is not bound to ctx, which only bounds the start-up; call Stop.
func Start(ctx context.Context, dir string, opts Options) (*Registry, error) {
	if opts.Binary == "" {
		opts.Binary = DefaultBinary
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 30 * time.Second
	}
	if _, err := os.Stat(opts.Binary); err != nil {
		return nil, fmt.Errorf("registry server %s: %w (install Debian's docker-registry package)", opts.Binary, err)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}

	r := &Registry{Dir: dir, TLS: !opts.NoTLS, Auth: !opts.NoAuth, LogPath: filepath.Join(dir, "registry.log")}
	if err := prepareIsolation(dir); err != nil {
		return nil, err
	}
	var tf tlsFiles
	if r.TLS {
		r.CertDir = filepath.Join(dir, "client-certs")
		if tf, err = writeCerts(filepath.Join(dir, "server-certs"), r.CertDir); err != nil {
			return nil, err
		}
	}
	htpasswd := ""
	if r.Auth {
		r.User, r.Password = opts.User, opts.Password
		if r.User == "" {
			r.User = "bootlace"
		}
		if r.Password == "" {
			r.Password = randomHex(12)
		}
		htpasswd = filepath.Join(dir, "htpasswd")
		if err := writeHtpasswd(htpasswd, r.User, r.Password); err != nil {
			return nil, err
		}
	}

	// The port is picked by binding :0 and releasing it, so another process
	// may grab it before the registry binds; retry with a new port then.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		r.Addr = fmt.Sprintf("127.0.0.1:%d", port)
		if r.Auth {
			r.AuthFile = filepath.Join(dir, "auth.json")
			if err := writeAuthFile(r.AuthFile, r.Addr, r.User, r.Password); err != nil {
				return nil, err
			}
		}
		cfg := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(cfg, []byte(configYAML(r.Addr, filepath.Join(dir, "storage"), tf, htpasswd)), 0o600); err != nil {
			return nil, fmt.Errorf("writing %s: %w", cfg, err)
		}
		lastErr = r.run(ctx, opts.Binary, cfg, opts.StartTimeout)
		if lastErr == nil {
			if err := r.saveState(); err != nil {
				_ = r.Stop()
				return nil, err
			}
			return r, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

// run starts the server and waits until /v2/ answers as configured.
func (r *Registry) run(ctx context.Context, binary, cfg string, timeout time.Duration) error {
	logf, err := os.OpenFile(r.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening %s: %w", r.LogPath, err)
	}
	defer logf.Close() // the child holds its own descriptor

	cmd := exec.Command(binary, "serve", cfg)
	cmd.Dir = r.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so Stop can signal everything it started and a
	// Ctrl-C on the terminal reaches only us.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", binary, err)
	}
	p := &process{pid: cmd.Process.Pid, exited: make(chan struct{})}
	r.proc, r.PID = p, p.pid
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()

	if err := r.waitReady(ctx, timeout); err != nil {
		_ = r.Stop()
		return fmt.Errorf("registry on %s did not come up: %w\n%s", r.Addr, err, tail(r.LogPath, 20))
	}
	return nil
}

func (r *Registry) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client, err := r.HTTPClient()
	if err != nil {
		return err
	}
	want := http.StatusOK
	if r.Auth {
		want = http.StatusUnauthorized
	}
	url := r.BaseURL() + "/v2/"
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return nil
			}
			return fmt.Errorf("GET %s: status %d, want %d", url, resp.StatusCode, want)
		}
		select {
		case <-r.proc.exited:
			return fmt.Errorf("server exited: %v", r.proc.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last error: %v)", url, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop terminates the server's process group and waits for it. It is
// idempotent and safe on a registry that already died.
func (r *Registry) Stop() error {
	if r == nil || r.proc == nil {
		return nil
	}
	p := r.proc
	p.stopOnce.Do(func() {
		pgid := p.pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.exited
		}
		// Anything else left in the group (there should be nothing).
		if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			p.stopErr = fmt.Errorf("killing process group %d: %w", pgid, err)
		}
		_ = os.Remove(filepath.Join(r.Dir, stateFile))
	})
	return p.stopErr
}

// Ref returns the containers/image reference for repoTag ("repo:tag") in
// this registry, e.g. "docker://127.0.0.1:5000/fixture:latest".
func (r *Registry) Ref(repoTag string) string {
	return "docker://" + r.Addr + "/" + strings.TrimPrefix(repoTag, "/")
}

// BaseURL is https://ADDR or http://ADDR.
func (r *Registry) BaseURL() string {
	if r.TLS {
		return "https://" + r.Addr
	}
	return "http://" + r.Addr
}

// HTTPClient returns a client that trusts the registry's CA (and only it).
func (r *Registry) HTTPClient() (*http.Client, error) {
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	if r.TLS {
		pemData, err := os.ReadFile(filepath.Join(r.CertDir, "ca.crt"))
		if err != nil {
			return nil, fmt.Errorf("reading registry CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("no certificate in %s", filepath.Join(r.CertDir, "ca.crt"))
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}, nil
}

// Load returns the registry recorded in dir by a running Start (possibly in
// another process). The result can Push and Ref; its Stop does nothing.
func Load(dir string) (*Registry, error) {
	path := filepath.Join(dir, stateFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading registry state: %w (is a registry running with this --dir?)", err)
	}
	r := &Registry{}
	if err := json.Unmarshal(data, r); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	return r, nil
}

func (r *Registry) saveState() error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding registry state: %w", err)
	}
	path := filepath.Join(r.Dir, stateFile)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

func configYAML(addr, storage string, tf tlsFiles, htpasswd string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\n")
	fmt.Fprintf(&b, "storage:\n  filesystem:\n    rootdirectory: %q\n  delete:\n    enabled: true\n", storage)
	fmt.Fprintf(&b, "http:\n  addr: %q\n  secret: %q\n", addr, randomHex(16))
	if tf.serverCert != "" {
		fmt.Fprintf(&b, "  tls:\n    certificate: %q\n    key: %q\n", tf.serverCert, tf.serverKey)
	}
	if htpasswd != "" {
		fmt.Fprintf(&b, "auth:\n  htpasswd:\n    realm: bootlace-testbed\n    path: %q\n", htpasswd)
	}
	return b.String()
}

func writeHtpasswd(path, user, password string) error {
	if strings.ContainsAny(user, ":\n") {
		return fmt.Errorf("registry user %q: must not contain ':' or a newline", user)
	}
	// The registry accepts only bcrypt entries; MinCost keeps tests fast and
	// is fine for a throwaway loopback credential.
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		return fmt.Errorf("hashing registry password: %w", err)
	}
	if err := os.WriteFile(path, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

func writeAuthFile(path, addr, user, password string) error {
	type entry struct {
		Auth string `json:"auth"`
	}
	doc := map[string]map[string]entry{"auths": {addr: {Auth: base64.StdEncoding.EncodeToString([]byte(user + ":" + password))}}}
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding auth file: %w", err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails on Linux
	return hex.EncodeToString(b)
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
