package server_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/servertest"
)

// TestStoreEncryptedAtRest: with a store key, no event payload or schema
// text is readable in the data dir.
func TestStoreEncryptedAtRest(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		key  string
		want bool // plaintext found
	}{{"plain", "", true}, {"encrypted", "0123456789abcdef0123456789abcdef", false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			srv := servertest.Start(t, server.Config{DataDir: dir, StoreKey: tc.key})
			secret := "card-4111-1111-1111-1111"
			if err := srv.Broker().Publish(t.Context(), &broker.Message{Topic: "secrets", Route: "x.v1", Data: []byte(secret)}); err != nil {
				t.Fatal(err)
			}
			if _, err := srv.Registry().Register(t.Context(), "secrets-value", schemaOf(`{"type":"record","name":"TopSecretRecord","fields":[]}`), regOpts()); err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			if err := srv.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			found := map[string]bool{}
			_ = filepath.Walk(filepath.Join(dir, "jetstream"), func(p string, fi os.FileInfo, err error) error {
				if err != nil || fi.IsDir() {
					return nil
				}
				b, _ := os.ReadFile(p)
				for _, s := range []string{secret, "TopSecretRecord"} {
					if bytes.Contains(b, []byte(s)) {
						found[s] = true
					}
				}
				return nil
			})
			if got := found[secret] && found["TopSecretRecord"]; got != tc.want {
				t.Fatalf("plaintext found %v, want %v", found, tc.want)
			}
			if !tc.want && (found[secret] || found["TopSecretRecord"]) {
				t.Fatalf("plaintext in an encrypted store: %v", found)
			}
		})
	}
	// The key comes back: a restart with the same key reads the data; a
	// wrong key does not start.
	dir := t.TempDir()
	key := "0123456789abcdef0123456789abcdef"
	srv := servertest.Start(t, server.Config{DataDir: dir, StoreKey: key})
	if err := srv.Broker().Publish(t.Context(), &broker.Message{Topic: "kept", Route: "x.v1", Data: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	_ = srv.Shutdown(t.Context())
	srv = servertest.Start(t, server.Config{DataDir: dir, StoreKey: key})
	st, err := srv.Broker().JetStream().Stream(t.Context(), "kept")
	if err != nil || st.CachedInfo().State.Msgs != 1 {
		t.Fatalf("after restart with the key: %v", err)
	}
}

// TestSlowClientsAreCut: a client that sends part of its headers, or its
// headers and part of its body, then stalls, is disconnected once the
// read timeouts pass, on both HTTP listeners.
func TestSlowClientsAreCut(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, server.Config{HTTPTimeouts: server.HTTPTimeouts{ReadHeader: 300 * time.Millisecond, Read: 600 * time.Millisecond}})
	for _, base := range []string{srv.AdminURL(), srv.RegistryURL()} {
		addr := strings.TrimPrefix(base, "http://")
		for name, send := range map[string]string{
			"slow headers": "POST /api/v1/replay HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl",
			"slow body":    "POST /api/v1/replay HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"gro",
		} {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if _, err := io.WriteString(c, send); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			rest, err := io.ReadAll(bufio.NewReader(c))
			d := time.Since(start)
			c.Close()
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("%s %s: connection still open after 10s", base, name)
			}
			if d > 1600*time.Millisecond {
				t.Fatalf("%s %s: cut after %v", base, name, d)
			}
			if len(rest) > 0 && !bytes.HasPrefix(rest, []byte("HTTP/1.1 4")) {
				t.Fatalf("%s %s: answer %q", base, name, rest)
			}
		}
	}
}

// TestHostAndCrossSiteChecks: DNS-rebinding hosts and cross-site posts
// are refused on an unauthenticated loopback server; the CLI's requests
// pass.
func TestHostAndCrossSiteChecks(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, server.Config{})
	for _, tc := range []struct {
		name, method, path string
		hdr                map[string]string
		body, ctype        string
		code               int
	}{
		{"rebinding host", "POST", "/api/v1/replay", map[string]string{"Host": "evil.example:8080"}, `{}`, "application/json", 421},
		{"rebinding host GET", "GET", "/api/v1/topics", map[string]string{"Host": "attacker.test"}, "", "", 421},
		{"cross-site fetch", "POST", "/api/v1/dlq/redrive", map[string]string{"Sec-Fetch-Site": "cross-site"}, `{"dry_run":true}`, "application/json", 403},
		{"foreign origin", "POST", "/api/v1/dlq/redrive", map[string]string{"Origin": "https://evil.example"}, `{"dry_run":true}`, "application/json", 403},
		{"form post", "POST", "/api/v1/replay", nil, "group=g&to=first", "application/x-www-form-urlencoded", 415},
		{"text post", "POST", "/api/v1/dlq/redrive", nil, `{"dry_run":true}`, "text/plain", 415},
		{"dot segments", "GET", "/api/v1/dlq/%2e%2e/x", nil, "", "", 400},
		{"localhost", "GET", "/api/v1/topics", map[string]string{"Host": "localhost"}, "", "", 200},
		{"same origin", "POST", "/api/v1/dlq/redrive", map[string]string{"Sec-Fetch-Site": "same-origin"}, `{"dry_run":true}`, "application/json", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), tc.method, srv.AdminURL()+tc.path, strings.NewReader(tc.body))
			for k, v := range tc.hdr {
				if k == "Host" {
					req.Host = v
				} else {
					req.Header.Set(k, v)
				}
			}
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("%d %s, want %d", resp.StatusCode, b, tc.code)
			}
		})
	}
}

func schemaOf(text string) schema.Schema { return schema.Schema{Type: schema.Avro, Text: text} }

func regOpts() schema.RegisterOptions { return schema.RegisterOptions{} }
