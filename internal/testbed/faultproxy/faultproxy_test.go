package faultproxy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func startPair(t *testing.T, body []byte, rules ...Rule) (*Proxy, *http.Client) {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(body))
	}))
	t.Cleanup(up.Close)
	p, err := Start(Options{Upstream: strings.TrimPrefix(up.URL, "http://"), Dir: t.TempDir()}, rules)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
	})
	ca, err := os.ReadFile(filepath.Join(p.CertDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	t.Cleanup(c.CloseIdleConnections)
	return p, c
}

func TestFaults(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	tests := []struct {
		name      string
		rules     []Rule
		path      string
		wantCodes []int // status per request; 0 means the body read must fail
		wantBytes []int // bytes read per request (-1: whole body)
		minTime   time.Duration
		injected  int
	}{
		{name: "status twice then pass", rules: []Rule{{Match: "/blobs/", Kind: Status, Status: 500, Count: 2}}, path: "/v2/x/blobs/sha256:1",
			wantCodes: []int{500, 500, 200}, wantBytes: []int{-2, -2, -1}, injected: 2},
		{name: "unmatched path passes", rules: []Rule{{Match: "/blobs/", Kind: Status, Count: 1}}, path: "/v2/x/manifests/latest",
			wantCodes: []int{200}, wantBytes: []int{-1}},
		{name: "permanent 502", rules: []Rule{{Kind: Status, Status: 502}}, path: "/v2/",
			wantCodes: []int{502, 502, 502}, wantBytes: []int{-2, -2, -2}, injected: 3},
		{name: "reset mid-body once", rules: []Rule{{Match: "/blobs/", Kind: Reset, After: 100000, Count: 1}}, path: "/v2/x/blobs/sha256:1",
			wantCodes: []int{0, 200}, wantBytes: []int{100000, -1}, injected: 1},
		{name: "stall then continue", rules: []Rule{{Kind: Stall, After: 4096, Stall: 300 * time.Millisecond, Count: 1}}, path: "/v2/x/blobs/sha256:1",
			wantCodes: []int{200}, wantBytes: []int{-1}, minTime: 300 * time.Millisecond, injected: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, c := startPair(t, body, tt.rules...)
			start := time.Now()
			for i, want := range tt.wantCodes {
				resp, err := c.Get("https://" + p.Addr + tt.path)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				got, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case want == 0:
					if rerr == nil {
						t.Errorf("request %d: body read succeeded, want a reset", i)
					}
					if len(got) != tt.wantBytes[i] {
						t.Errorf("request %d: got %d bytes before the reset, want %d", i, len(got), tt.wantBytes[i])
					}
				case resp.StatusCode != want:
					t.Errorf("request %d: status %d, want %d", i, resp.StatusCode, want)
				case tt.wantBytes[i] == -1 && (rerr != nil || !bytes.Equal(got, body)):
					t.Errorf("request %d: body %d bytes (err %v), want the whole %d", i, len(got), rerr, len(body))
				}
			}
			if el := time.Since(start); el < tt.minTime {
				t.Errorf("took %s, want at least %s", el, tt.minTime)
			}
			if n := len(p.Injections()); n != tt.injected {
				t.Errorf("%d injections recorded, want %d: %+v", n, tt.injected, p.Injections())
			}
		})
	}
}

func TestStopEndsStall(t *testing.T) {
	p, c := startPair(t, bytes.Repeat([]byte("x"), 1<<20), Rule{Kind: Stall, After: 10, Stall: time.Hour})
	errc := make(chan error, 1)
	go func() {
		resp, err := c.Get("https://" + p.Addr + "/v2/x/blobs/a")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		errc <- err
	}()
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err == nil {
			t.Error("the stalled read succeeded after Stop")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not end the stalled connection")
	}
	t.Logf("stop took %s", time.Since(start))
}

func TestBadRule(t *testing.T) {
	if _, err := Start(Options{Upstream: "127.0.0.1:1", Dir: t.TempDir()}, []Rule{{Kind: "explode"}}); err == nil {
		t.Error("unknown kind accepted")
	}
}
