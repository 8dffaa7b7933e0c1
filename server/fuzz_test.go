package server_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/server/auth"
)

// FuzzSecureHTTP sends arbitrary requests to a running server with TLS and
// authentication on, through the guard into the admin API and the
// registry, as an anonymous client, a reader and an admin: whatever the
// method, path, body, content type or token, the answer is 4xx or a 2xx
// (never a 5xx), or the connection is closed, and it comes within seconds.
func FuzzSecureHTTP(f *testing.F) {
	for _, s := range []struct {
		who                        uint8
		method, path, ctype, authz string
		body                       string
	}{
		{0, "GET", "/api/v1/topics", "", "", ""},
		{1, "POST", "/api/v1/dlq/x/redrive", "application/json", "", `{"dry_run":true}`},
		{2, "POST", "/api/v1/replay", "application/json", "", `{"group":"g","topic":"t","start":"first"}`},
		{2, "DELETE", "/api/v1/dlq/..%2f..%2fetc", "", "", ""},
		{2, "GET", "/api/v1/dlq/t?after=18446744073709551615", "", "", ""},
		{1, "POST", "/subjects/a%2Fb/versions", "application/vnd.schemaregistry.v1+json", "", `{"schema":"\"string\""}`},
		{2, "POST", "/subjects/deep/versions", "application/json", "", `{"schemaType":"JSON","schema":"` + strings.Repeat(`{\"items\":`, 300) + `{}` + strings.Repeat(`}`, 300) + `"}`},
		{2, "PUT", "/config", "text/plain", "", `{"compatibility":"NONE"}`},
		{0, "GET", "/subjects", "", "Bearer eyJhbGciOiJub25lIn0.e30.", ""},
		{0, "GET", "/subjects", "", "Basic Og==", ""},
		{2, "POST", "/api/v1/auth/users", "application/json", "", `{"name":"","role":"god"}`},
		{2, "GET", "/schemas/ids/9223372036854775807", "", "", ""},
		{2, "GET", "/subjects/x/versions/99999999999999999999", "", "", ""},
	} {
		f.Add(s.who, s.method, s.path, s.ctype, s.authz, s.body)
	}
	srv, dev := secureServer(f, false)
	admin, _ := loadCredsFile(f, srv.AdminCredsPath())
	ahc := httpClient(f, dev, admin)
	reader, _ := mint(f, ahc, srv, "/api/v1/auth/users", auth.UserSpec{Name: "fuzz-reader", Role: auth.RoleReader})
	clients := []*http.Client{httpClient(f, dev, nil), httpClient(f, dev, reader), ahc}
	for _, c := range clients {
		c.Timeout = 10 * time.Second
	}
	bases := []string{srv.AdminURL(), srv.RegistryURL()}
	f.Fuzz(func(t *testing.T, who uint8, method, path, ctype, authz, body string) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \t\r\n#") || len(path) > 2048 || len(body) > 1<<16 {
			return
		}
		switch method {
		case "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS":
		default:
			return
		}
		i := int(who) % len(clients)
		for _, base := range bases {
			req, err := http.NewRequestWithContext(t.Context(), method, base+path, strings.NewReader(body))
			if err != nil {
				return
			}
			if ctype != "" {
				req.Header.Set("Content-Type", ctype)
			}
			if authz != "" {
				// A token of the fuzzer's own replaces the client's.
				hc := httpClient(t, dev, nil)
				hc.Timeout = 10 * time.Second
				req.Header.Set("Authorization", authz)
				check(t, hc, req)
				continue
			}
			check(t, clients[i], req)
		}
	})
}

func check(t *testing.T, hc *http.Client, req *http.Request) {
	t.Helper()
	start := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("%s %s: no answer in %v", req.Method, req.URL, time.Since(start))
		}
		return // a closed connection is an answer
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode >= 500 {
		t.Fatalf("%s %s: %d", req.Method, req.URL, resp.StatusCode)
	}
}
