// Package faultproxy is a TLS-terminating reverse proxy on 127.0.0.1 that
// sits in front of a test registry and injects faults by rule: error
// statuses, connections reset part-way through a body, and stalls. Each
// rule fires a bounded number of times, so a test can demand that a client
// recovers from exactly the faults it was shown, and every injection is
// recorded for the test to assert on.
package faultproxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Kind is the fault a rule injects.
type Kind string

const (
	// Status answers with Rule.Status without asking the upstream.
	Status Kind = "status"
	// Reset forwards Rule.After bytes of the upstream body, then resets the
	// TCP connection (SO_LINGER 0), as a dying middlebox would.
	Reset Kind = "reset"
	// Stall forwards Rule.After bytes of the body, then holds the connection
	// idle for Rule.Stall (or until the client gives up) before going on.
	Stall Kind = "stall"
)

// Rule selects requests and the fault to inject into them.
type Rule struct {
	// Match is a substring of the request path ("/blobs/", a digest,
	// "/manifests/"); empty matches every request. Only GET requests match.
	Match string
	Kind  Kind
	// Status is the HTTP status for Kind Status (default 503).
	Status int
	// After is how many body bytes pass before a Reset or a Stall.
	After int64
	// Stall is how long a Stall holds the connection (default 1 minute).
	Stall time.Duration
	// Count is how many matching requests the rule affects; 0 or less
	// means every one (a permanent fault).
	Count int
}

// Injection records one fault the proxy injected.
type Injection struct {
	Rule   int // index into the rules given to Start
	Kind   Kind
	Method string
	Path   string
	Time   time.Time
}

// Proxy is a running fault-injecting proxy.
type Proxy struct {
	// Addr is 127.0.0.1:PORT; clients use it in place of the registry's.
	Addr string
	// CertDir holds only ca.crt, the proxy's CA, for --cert-dir.
	CertDir string

	srv  *http.Server
	ln   net.Listener
	done chan struct{}

	mu        sync.Mutex
	rules     []Rule
	remaining []int
	injected  []Injection
	seen      []Request
	stopping  chan struct{}
	stopOnce  sync.Once
}

// Options locate the upstream registry.
type Options struct {
	// Upstream is the registry's host:port.
	Upstream string
	// UpstreamCA is a PEM file the upstream's certificate chains to; empty
	// means the upstream speaks plain HTTP.
	UpstreamCA string
	// Dir receives the proxy's CA and server certificate.
	Dir string
}

// Start listens on a free loopback port and serves until Stop.
func Start(opts Options, rules []Rule) (*Proxy, error) {
	if opts.Upstream == "" || opts.Dir == "" {
		return nil, errors.New("faultproxy: Upstream and Dir are required")
	}
	for i, r := range rules {
		switch r.Kind {
		case Status, Reset, Stall:
		default:
			return nil, fmt.Errorf("faultproxy: rule %d: unknown kind %q", i, r.Kind)
		}
	}
	scheme := "http"
	upTLS := &tls.Config{MinVersion: tls.VersionTLS12}
	if opts.UpstreamCA != "" {
		pemData, err := os.ReadFile(opts.UpstreamCA)
		if err != nil {
			return nil, fmt.Errorf("reading upstream CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("no certificate in %s", opts.UpstreamCA)
		}
		upTLS.RootCAs = pool
		scheme = "https"
	}
	certDir := filepath.Join(opts.Dir, "client-certs")
	cert, err := makeCerts(opts.Dir, certDir)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening on loopback: %w", err)
	}
	p := &Proxy{Addr: ln.Addr().String(), CertDir: certDir, ln: ln, done: make(chan struct{}),
		rules: append([]Rule(nil), rules...), stopping: make(chan struct{})}
	for _, r := range rules {
		p.remaining = append(p.remaining, r.Count)
	}
	target := &url.URL{Scheme: scheme, Host: opts.Upstream}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = opts.Upstream
		},
		Transport: &http.Transport{TLSClientConfig: upTLS, DisableCompression: true},
		// Streams bodies through as they arrive, so a Reset cuts at a byte
		// offset the client really received.
		FlushInterval: -1,
		// Injected resets make the proxy's copy fail by design.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	p.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { p.serve(rp, w, r) }),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
			NextProtos: []string{"http/1.1"}},
		// HTTP/1.1 only: a reset must hijack the connection.
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go func() {
		defer close(p.done)
		_ = p.srv.ServeTLS(ln, "", "")
	}()
	return p, nil
}

// Stop closes the listener and every connection, ending stalls at once.
func (p *Proxy) Stop() error {
	p.stopOnce.Do(func() { close(p.stopping) })
	err := p.srv.Close()
	<-p.done
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("stopping fault proxy: %w", err)
	}
	return nil
}

// Injections returns what was injected so far, in order.
func (p *Proxy) Injections() []Injection {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Injection(nil), p.injected...)
}

// Request is one request the proxy saw.
type Request struct {
	Method, Path string
	// Range is the request's Range header: how a client resumes a body.
	Range string
	// Fault is the kind injected into it, "" for none.
	Fault Kind
}

// Requests returns every request seen so far, in order.
func (p *Proxy) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Request(nil), p.seen...)
}

// pick returns the first rule that matches r and still has budget. A
// status rule is spent at once; a reset or stall only when it fires (see
// claim), since a body shorter than After never reaches the fault.
func (p *Proxy) pick(r *http.Request) (rule, seen int, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = append(p.seen, Request{Method: r.Method, Path: r.URL.Path, Range: r.Header.Get("Range")})
	seen = len(p.seen) - 1
	if r.Method != http.MethodGet {
		return 0, seen, false
	}
	for i, rule := range p.rules {
		if !strings.Contains(r.URL.Path, rule.Match) || (rule.Count > 0 && p.remaining[i] == 0) {
			continue
		}
		if rule.Kind == Status {
			p.spend(i, r, seen)
		}
		return i, seen, true
	}
	return 0, seen, false
}

// claim spends rule i's budget for a fault about to fire; false means the
// budget ran out meanwhile and the response passes untouched.
func (p *Proxy) claim(i int, r *http.Request, seen int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rules[i].Count > 0 && p.remaining[i] == 0 {
		return false
	}
	p.spend(i, r, seen)
	return true
}

func (p *Proxy) spend(i int, r *http.Request, seen int) {
	if p.rules[i].Count > 0 {
		p.remaining[i]--
	}
	p.injected = append(p.injected, Injection{Rule: i, Kind: p.rules[i].Kind, Method: r.Method, Path: r.URL.Path, Time: time.Now()})
	p.seen[seen].Fault = p.rules[i].Kind
}

func (p *Proxy) serve(rp *httputil.ReverseProxy, w http.ResponseWriter, r *http.Request) {
	i, seen, ok := p.pick(r)
	if !ok {
		rp.ServeHTTP(w, r)
		return
	}
	rule := p.rules[i]
	switch rule.Kind {
	case Status:
		code := rule.Status
		if code == 0 {
			code = http.StatusServiceUnavailable
		}
		http.Error(w, "injected by faultproxy", code)
	case Reset, Stall:
		fw := &faultWriter{ResponseWriter: w, rule: rule, ctx: r.Context(), stopping: p.stopping,
			claim: func() bool { return p.claim(i, r, seen) }}
		rp.ServeHTTP(fw, r)
	}
}

// faultWriter passes the response through until rule.After body bytes, then
// resets or stalls.
type faultWriter struct {
	http.ResponseWriter
	rule     Rule
	ctx      context.Context
	stopping <-chan struct{}
	claim    func() bool
	written  int64
	fired    bool
	dead     bool
}

// errInjected makes the reverse proxy stop copying after a reset.
var errInjected = errors.New("faultproxy: connection reset injected")

func (f *faultWriter) Write(b []byte) (int, error) {
	if f.dead {
		return 0, errInjected
	}
	if f.fired || f.written+int64(len(b)) <= f.rule.After {
		n, err := f.ResponseWriter.Write(b)
		f.written += int64(n)
		return n, err
	}
	head := f.rule.After - f.written
	if head > 0 {
		n, err := f.ResponseWriter.Write(b[:head])
		f.written += int64(n)
		if err != nil {
			return n, err
		}
	}
	f.fired = true
	if !f.claim() {
		n, err := f.ResponseWriter.Write(b[head:])
		f.written += int64(n)
		return int(head) + n, err
	}
	if rc := http.NewResponseController(f.ResponseWriter); rc.Flush() != nil {
		return int(head), errInjected
	}
	switch f.rule.Kind {
	case Reset:
		f.dead = true
		f.reset()
		return int(head), errInjected
	default: // Stall
		d := f.rule.Stall
		if d <= 0 {
			d = time.Minute
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-f.ctx.Done():
			return int(head), f.ctx.Err()
		case <-f.stopping:
			return int(head), errInjected
		}
		n, err := f.ResponseWriter.Write(b[head:])
		f.written += int64(n)
		return int(head) + n, err
	}
}

// Flush keeps the reverse proxy's streaming working through the wrapper.
func (f *faultWriter) Flush() {
	if !f.dead {
		_ = http.NewResponseController(f.ResponseWriter).Flush()
	}
}

func (f *faultWriter) Unwrap() http.ResponseWriter { return f.ResponseWriter }

// reset hijacks the connection and closes it with SO_LINGER 0, which sends
// a TCP RST instead of an orderly FIN.
func (f *faultWriter) reset() {
	conn, _, err := http.NewResponseController(f.ResponseWriter).Hijack()
	if err != nil {
		return
	}
	raw := conn
	if tc, ok := conn.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	if tcp, ok := raw.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = raw.Close()
}

// makeCerts writes a throwaway CA (alone in certDir, as containers/image
// wants) and returns a server certificate for 127.0.0.1 signed by it.
func makeCerts(dir, certDir string) (tls.Certificate, error) {
	for _, d := range []string{dir, certDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return tls.Certificate{}, fmt.Errorf("creating %s: %w", d, err)
		}
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generating CA key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: "bootlace faultproxy CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("creating CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parsing CA certificate: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generating server key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano() + 1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("creating server certificate: %w", err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	if err := os.WriteFile(filepath.Join(certDir, "ca.crt"), caPEM, 0o644); err != nil {
		return tls.Certificate{}, fmt.Errorf("writing proxy CA: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
