package web_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/heraldhq/herald/credentials"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/servertest"
)

// TestDashboardNeedsCredentials: with authentication on, the dashboard
// asks the browser for credentials and opens with the admin's.
func TestDashboardNeedsCredentials(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, server.Config{Auth: true})
	base := srv.AdminURL()
	code, body := get(t, base, "/")
	if code != http.StatusUnauthorized {
		t.Fatalf("GET / without credentials: %d, want 401:\n%s", code, body)
	}
	admin, err := credentials.Load(srv.AdminCredsPath())
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(admin.Name(), admin.Token())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / with the admin's credentials: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	if h := resp.Header.Get("Content-Security-Policy"); !strings.Contains(h, "script-src 'self'") {
		t.Fatalf("Content-Security-Policy %q", h)
	}
}
