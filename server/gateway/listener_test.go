package gateway_test

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/credentials"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/auth"
	"github.com/heraldhq/herald/server/gateway"
)

// Without GatewayAddr the gateway is served on the admin address.
func TestGatewayOnAdminAddressByDefault(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{})
	if srv.GatewayURL() != srv.AdminURL() {
		t.Fatalf("gateway %s, admin %s: want the same address", srv.GatewayURL(), srv.AdminURL())
	}
	topic := newTopic(t, srv)
	ev := map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "d1", "Ce-Source": "s", "Ce-Type": "a.b"}
	if code, body := post(t, srv.AdminURL()+"/v1/topics/"+topic+"/events", ev, nil); code != 202 {
		t.Fatalf("ingest on the admin address: %d %s", code, body)
	}
	if n := stored(t, srv, topic); n != 1 {
		t.Fatalf("stored %d events, want 1", n)
	}
}

// With GatewayAddr the gateway has a listener of its own, with the admin
// address's TLS and authentication, and the admin address no longer
// serves it.
func TestGatewayOwnListener(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dev, err := auth.GenerateDevTLS(filepath.Join(dir, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, server.Config{DataDir: filepath.Join(dir, "data"), GatewayAddr: "on",
		TLS: &auth.TLSFiles{CertFile: dev.CertFile, KeyFile: dev.KeyFile}, Auth: true})
	gw := srv.GatewayURL()
	if !strings.HasPrefix(gw, "https://") || gw == srv.AdminURL() {
		t.Fatalf("gateway URL %s (admin %s): want its own https address", gw, srv.AdminURL())
	}
	mine, other := newTopic(t, srv), newTopic(t, srv)
	b, _, err := srv.Auth().AddService(t.Context(), auth.ServiceSpec{Name: testenv.Unique("svc"), Publish: []string{mine}, Subscribe: []string{mine}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	svcCreds, err := credentials.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	adminCreds, err := credentials.Load(srv.AdminCredsPath())
	if err != nil {
		t.Fatal(err)
	}
	tc, err := credentials.TLSConfig(dev.CAFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: tc}
	t.Cleanup(tr.CloseIdleConnections)
	anon := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	svc := &http.Client{Transport: svcCreds.Transport(tr), Timeout: 30 * time.Second}
	adm := &http.Client{Transport: adminCreds.Transport(tr), Timeout: 30 * time.Second}

	api, err := gateway.NewAPIClient(srv.AdminURL(), adm)
	if err != nil {
		t.Fatal(err)
	}
	group := testenv.Unique("g")
	if _, err := api.Create(t.Context(), gateway.Subscription{Group: group, Topic: mine}); err != nil {
		t.Fatalf("create a pull subscription on the admin address: %v", err)
	}

	ev := map[string]string{"Ce-Specversion": "1.0", "Ce-Source": "s", "Ce-Type": "a.b"}
	for i, tc := range []struct {
		name        string
		hc          *http.Client
		method, url string
		status      int
		problem     bool // the answer is a problem document
	}{
		{"no credentials", anon, "POST", gw + "/v1/topics/" + mine + "/events", 401, true},
		{"publish to its topic", svc, "POST", gw + "/v1/topics/" + mine + "/events", 202, false},
		{"publish to another topic", svc, "POST", gw + "/v1/topics/" + other + "/events", 403, true},
		{"admin publishes anywhere", adm, "POST", gw + "/v1/topics/" + other + "/events", 202, false},
		{"pull a group of its topic", svc, "GET", gw + "/v1/groups/" + group + "/events?wait=10ms", 200, false},
		{"health check needs no credentials", anon, "GET", gw + "/healthz", 200, false},
		{"readiness needs no credentials", anon, "GET", gw + "/readyz", 200, false},
		{"no admin API on the gateway", adm, "GET", gw + "/api/v1/topics", 404, true},
		{"no subscriptions API on the gateway", adm, "POST", gw + "/api/v1/subscriptions", 404, true},
		{"no gateway on the admin address", adm, "POST", srv.AdminURL() + "/v1/topics/" + mine + "/events", 404, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), tc.method, tc.url, nil)
			for k, v := range ev {
				req.Header.Set(k, v)
			}
			req.Header.Set("Ce-Id", "e-"+tc.name+"-"+string(rune('a'+i)))
			resp, err := tc.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if ct := resp.Header.Get("Content-Type"); tc.problem && ct != gateway.ContentTypeProblem {
				t.Fatalf("content type %q, want %s: %s", ct, gateway.ContentTypeProblem, body)
			}
		})
	}
	if n := stored(t, srv, mine); n != 1 {
		t.Fatalf("topic %s holds %d events, want 1 (the one published on the gateway listener)", mine, n)
	}
	if n := stored(t, srv, other); n != 1 {
		t.Fatalf("topic %s holds %d events, want 1", other, n)
	}
	plain := strings.Replace(gw, "https://", "http://", 1)
	if resp, err := http.Get(plain + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP was served on the TLS gateway listener")
		}
	}
}
