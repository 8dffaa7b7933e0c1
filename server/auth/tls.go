package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// TLSFiles names a certificate, its key and, for mutual TLS, the CA
// certificates clients must present a certificate of.
type TLSFiles struct {
	CertFile     string
	KeyFile      string
	ClientCAFile string
}

// ServerTLS returns the TLS configuration of a listener: TLS 1.2 or later
// with the certificate, and client certificates required and verified
// against ClientCAFile when it is set.
func ServerTLS(f TLSFiles) (*tls.Config, error) {
	if f.CertFile == "" || f.KeyFile == "" {
		return nil, errors.New("auth: TLS needs both --tls-cert and --tls-key")
	}
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("auth: TLS certificate %s / key %s: %w", f.CertFile, f.KeyFile, err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if f.ClientCAFile != "" {
		pem, err := os.ReadFile(f.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("auth: client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("auth: client CA %s holds no PEM certificate", f.ClientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// DevTLS is a throwaway certificate authority and the certificates it
// signed, as files.
type DevTLS struct {
	// CAFile is the CA certificate clients trust.
	CAFile string
	// CertFile and KeyFile are the server's, valid for localhost,
	// 127.0.0.1, ::1 and this machine's hostname.
	CertFile, KeyFile string
	// ClientCertFile and ClientKeyFile are a client certificate, for
	// trying mutual TLS.
	ClientCertFile, ClientKeyFile string
}

// GenerateDevTLS creates a new CA in dir, valid for 30 days, with a server
// and a client certificate. It is for development and tests: the CA's key
// is written next to it.
func GenerateDevTLS(dir string) (DevTLS, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return DevTLS{}, fmt.Errorf("auth: %w", err)
	}
	out := DevTLS{
		CAFile:   filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "server.pem"), KeyFile: filepath.Join(dir, "server-key.pem"),
		ClientCertFile: filepath.Join(dir, "client.pem"), ClientKeyFile: filepath.Join(dir, "client-key.pem"),
	}
	caKey, caCert, err := NewCA("Herald dev CA")
	if err != nil {
		return DevTLS{}, err
	}
	if err := writePEM(out.CAFile, "CERTIFICATE", caCert.Raw); err != nil {
		return DevTLS{}, err
	}
	if err := writeKey(filepath.Join(dir, "ca-key.pem"), caKey); err != nil {
		return DevTLS{}, err
	}
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	if err := IssueCert(caKey, caCert, "herald", hosts, false, out.CertFile, out.KeyFile); err != nil {
		return DevTLS{}, err
	}
	if err := IssueCert(caKey, caCert, "herald-dev-client", nil, true, out.ClientCertFile, out.ClientKeyFile); err != nil {
		return DevTLS{}, err
	}
	return out, nil
}

// NewCA returns a new self-signed CA key and certificate valid for 30 days.
func NewCA(name string) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	return key, cert, err
}

// IssueCert writes a certificate for hosts (server) or a client
// certificate signed by the CA, and its key.
func IssueCert(caKey *ecdsa.PrivateKey, ca *x509.Certificate, name string, hosts []string, client bool, certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("auth: key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     ca.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("auth: certificate: %w", err)
	}
	if err := writePEM(certFile, "CERTIFICATE", der); err != nil {
		return err
	}
	return writeKey(keyFile, key)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("auth: key: %w", err)
	}
	return writePEM(path, "EC PRIVATE KEY", der)
}

func writePEM(path, typ string, der []byte) error {
	if err := writeFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})); err != nil {
		return fmt.Errorf("auth: write %s: %w", path, err)
	}
	return nil
}
