// Package credentials reads and writes Herald credentials files, and turns
// them and a trusted CA into the options NATS and HTTP clients need.
//
// A credentials file is a NATS user credentials file (the user JWT and its
// nkey seed, as nsc writes them, so the nats CLI and any NATS client read
// it) with one more block: the API token that authenticates the same
// identity to Herald's admin API and schema registry (HTTP basic auth as
// NAME:TOKEN, or Authorization: Bearer TOKEN).
//
//	c, err := credentials.Load("orders.creds")
//	nc, err := nats.Connect(url, c.NATSOptions()...)
//	hc := &http.Client{Transport: c.Transport(nil)}
//
// `herald auth add-service` writes these files; herald.Config.Credentials
// and the CLI's --creds (or $HERALD_CREDS) read them.
package credentials

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
)

// EnvCreds names the environment variable holding the path of a
// credentials file; EnvCA the path of a PEM file of CA certificates to
// trust for Herald's TLS listeners.
const (
	EnvCreds = "HERALD_CREDS"
	EnvCA    = "HERALD_CA"
)

const (
	tokenBegin = "-----BEGIN HERALD API TOKEN-----"
	tokenEnd   = "------END HERALD API TOKEN------"
)

var tokenRE = regexp.MustCompile(`(?m)^-{3,}BEGIN HERALD API TOKEN-{3,}\r?\n([\w\-.=]+)\r?\n-{3,}END HERALD API TOKEN-{3,}`)

// Creds is a loaded credentials file. It is safe for concurrent use.
type Creds struct {
	path   string
	name   string
	jwt    string
	claims *jwt.UserClaims

	mu      sync.Mutex
	token   string
	modTime time.Time
}

// Load reads the credentials file at path.
func Load(path string) (*Creds, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("credentials %s: %w", path, err)
	}
	c.path = path
	if fi, err := os.Stat(path); err == nil {
		c.modTime = fi.ModTime()
	}
	return c, nil
}

// FromEnv loads the file $HERALD_CREDS names; nil, nil when it is unset.
func FromEnv() (*Creds, error) {
	p := os.Getenv(EnvCreds)
	if p == "" {
		return nil, nil
	}
	c, err := Load(p)
	if err != nil {
		return nil, fmt.Errorf("$%s: %w", EnvCreds, err)
	}
	return c, nil
}

// Parse reads the contents of a credentials file. A plain NATS
// credentials file (no API token) parses too; its Token is empty.
func Parse(b []byte) (*Creds, error) {
	tok, err := jwt.ParseDecoratedJWT(b)
	if err != nil || tok == "" || bytes.Equal(bytes.TrimSpace(b), []byte(tok)) {
		return nil, errors.New("no user JWT block: not a credentials file")
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		return nil, fmt.Errorf("user JWT: %w", err)
	}
	if _, err := jwt.ParseDecoratedNKey(b); err != nil {
		return nil, fmt.Errorf("nkey seed: %w", err)
	}
	c := &Creds{jwt: tok, claims: uc, name: uc.Name}
	if m := tokenRE.FindSubmatch(b); m != nil {
		c.token = string(m[1])
	}
	return c, nil
}

// Format writes a credentials file: the NATS user JWT and seed blocks, then
// the API token block.
func Format(userJWT string, seed []byte, token string) ([]byte, error) {
	b, err := jwt.FormatUserConfig(userJWT, seed)
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	if token != "" {
		if !regexp.MustCompile(`^[\w\-.=]+$`).MatchString(token) {
			return nil, errors.New("credentials: token has characters a credentials file cannot hold")
		}
		b = append(b, []byte("\n"+tokenBegin+"\n"+token+"\n"+tokenEnd+"\n")...)
	}
	return b, nil
}

// Name returns the identity's name (the service or user).
func (c *Creds) Name() string { return c.name }

// Path returns the file the credentials were loaded from ("" if parsed).
func (c *Creds) Path() string { return c.path }

// JWT returns the NATS user JWT.
func (c *Creds) JWT() string { return c.jwt }

// Token returns the API token, re-reading the file if it changed since it
// was loaded (a rotation rewrites it).
func (c *Creds) Token() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.path == "" {
		return c.token
	}
	fi, err := os.Stat(c.path)
	if err != nil || !fi.ModTime().After(c.modTime) {
		return c.token
	}
	if b, err := os.ReadFile(c.path); err == nil {
		if m := tokenRE.FindSubmatch(b); m != nil {
			c.token = string(m[1])
		}
		c.modTime = fi.ModTime()
	}
	return c.token
}

// InboxPrefix returns the reply-subject prefix the identity may subscribe
// to ("_INBOX_orders"), or "" when it is not restricted.
func (c *Creds) InboxPrefix() string {
	for _, s := range c.claims.Sub.Allow {
		if strings.HasPrefix(s, "_INBOX_") && strings.HasSuffix(s, ".>") {
			return strings.TrimSuffix(s, ".>")
		}
	}
	return ""
}

// Restricted reports whether the identity has publish restrictions.
func (c *Creds) Restricted() bool { return len(c.claims.Pub.Allow) > 0 || len(c.claims.Pub.Deny) > 0 }

// MayPublish reports whether the identity may publish to NATS subject.
func (c *Creds) MayPublish(subject string) bool {
	p := c.claims.Pub
	for _, d := range p.Deny {
		if SubjectMatch(d, subject) {
			return false
		}
	}
	if len(p.Allow) == 0 {
		return true
	}
	for _, a := range p.Allow {
		if SubjectMatch(a, subject) {
			return true
		}
	}
	return false
}

// SubjectMatch reports whether NATS subject matches pattern (tokens split
// on '.', '*' one token, '>' the rest).
func SubjectMatch(pattern, subject string) bool {
	pt, st := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, p := range pt {
		if p == ">" {
			return len(st) > i
		}
		if i >= len(st) || p != "*" && p != st[i] {
			return false
		}
	}
	return len(pt) == len(st)
}

// NATSOptions returns the options that authenticate a NATS connection with
// these credentials: the user JWT and seed, read from the file at each
// (re)connect so a rotated file is picked up, and the inbox prefix the
// identity may subscribe to.
func (c *Creds) NATSOptions() []nats.Option {
	var opts []nats.Option
	if c.path != "" {
		opts = append(opts, nats.UserCredentials(c.path))
	}
	if p := c.InboxPrefix(); p != "" {
		opts = append(opts, nats.CustomInboxPrefix(p))
	}
	return opts
}

// SetAuth sets the request's basic auth to the identity's name and token.
func (c *Creds) SetAuth(r *http.Request) {
	if t := c.Token(); t != "" {
		r.SetBasicAuth(c.name, t)
	}
}

// Transport returns a RoundTripper that authenticates every request over
// base (http.DefaultTransport when nil).
func (c *Creds) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return authTransport{c: c, base: base}
}

type authTransport struct {
	c    *Creds
	base http.RoundTripper
}

func (t authTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") == "" {
		r = r.Clone(r.Context())
		t.c.SetAuth(r)
	}
	return t.base.RoundTrip(r)
}

// TLSConfig returns a client TLS configuration trusting the CA
// certificates in caFile (the system roots when empty) and presenting the
// client certificate in certFile and keyFile when given (mutual TLS).
func TLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("credentials: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("credentials: CA file %s holds no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	}
	if certFile != "" || keyFile != "" {
		if certFile == "" || keyFile == "" {
			return nil, errors.New("credentials: a client certificate needs both its certificate and its key file")
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("credentials: client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
