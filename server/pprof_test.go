package server_test

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/auth"
	"github.com/heraldhq/herald/server/servertest"
)

func TestPprof(t *testing.T) {
	t.Parallel()
	const goroutines = "/debug/pprof/goroutine?debug=1"
	t.Run("off by default", func(t *testing.T) {
		t.Parallel()
		srv := servertest.Start(t, server.Config{})
		_, body := call(t, http.DefaultClient, "GET", srv.AdminURL()+goroutines, "")
		if strings.Contains(body, "goroutine profile:") {
			t.Fatal("a server without Pprof serves profiles")
		}
	})
	t.Run("on", func(t *testing.T) {
		t.Parallel()
		srv := servertest.Start(t, server.Config{Pprof: true})
		code, body := call(t, http.DefaultClient, "GET", srv.AdminURL()+goroutines, "")
		if code != 200 || !strings.Contains(body, "goroutine profile:") {
			t.Fatalf("GET %s: %d %.200s", goroutines, code, body)
		}
		if code, body := call(t, http.DefaultClient, "GET", srv.AdminURL()+"/debug/pprof/", ""); code != 200 || !strings.Contains(body, "heap") {
			t.Fatalf("GET /debug/pprof/: %d %.200s", code, body)
		}
	})
	t.Run("admins only with auth", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		dev, err := auth.GenerateDevTLS(filepath.Join(dir, "tls"))
		if err != nil {
			t.Fatal(err)
		}
		srv := servertest.Start(t, server.Config{DataDir: filepath.Join(dir, "data"), Auth: true, Pprof: true,
			TLS: &auth.TLSFiles{CertFile: dev.CertFile, KeyFile: dev.KeyFile}})
		admin, _ := loadCredsFile(t, srv.AdminCredsPath())
		ahc := httpClient(t, dev, admin)
		reader, _ := mint(t, ahc, srv, "/api/v1/auth/users", auth.UserSpec{Name: "rita", Role: auth.RoleReader})
		for _, tc := range []struct {
			name string
			hc   *http.Client
			code int
		}{
			{"anonymous", httpClient(t, dev, nil), 401},
			{"reader", httpClient(t, dev, reader), 403},
			{"admin", ahc, 200},
		} {
			if code, body := call(t, tc.hc, "GET", srv.AdminURL()+goroutines, ""); code != tc.code {
				t.Errorf("%s: GET %s: %d %.200s, want %d", tc.name, goroutines, code, body, tc.code)
			}
		}
	})
}
