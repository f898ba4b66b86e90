package registry

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// tlsFiles are the paths written by writeCerts.
type tlsFiles struct {
	caCert     string // the only file in the client cert dir
	serverCert string
	serverKey  string
}

// writeCerts creates a throwaway CA and a server certificate for 127.0.0.1
// and localhost. The CA certificate goes alone into certDir, because
// containers/image and skopeo treat every *.key there as a client key.
func writeCerts(serverDir, certDir string) (tlsFiles, error) {
	files := tlsFiles{
		caCert:     filepath.Join(certDir, "ca.crt"),
		serverCert: filepath.Join(serverDir, "server.crt"),
		serverKey:  filepath.Join(serverDir, "server.key"),
	}
	for _, d := range []string{serverDir, certDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return files, fmt.Errorf("creating %s: %w", d, err)
		}
	}

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return files, fmt.Errorf("generating CA key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "bootlace testbed CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return files, fmt.Errorf("creating CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return files, fmt.Errorf("parsing CA certificate: %w", err)
	}

	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return files, fmt.Errorf("generating server key: %w", err)
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return files, fmt.Errorf("creating server certificate: %w", err)
	}
	srvKeyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		return files, fmt.Errorf("encoding server key: %w", err)
	}

	if err := writePEM(files.caCert, "CERTIFICATE", caDER, 0o644); err != nil {
		return files, err
	}
	if err := writePEM(files.serverCert, "CERTIFICATE", srvDER, 0o644); err != nil {
		return files, err
	}
	if err := writePEM(files.serverKey, "PRIVATE KEY", srvKeyDER, 0o600); err != nil {
		return files, err
	}
	return files, nil
}

func writePEM(path, blockType string, der []byte, mode os.FileMode) error {
	data := pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der})
	if err := os.WriteFile(path, data, mode); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		// crypto/rand does not fail on Linux; a fixed serial is still valid.
		return big.NewInt(1)
	}
	return n
}
