package gateway_test

import (
	"net/http"
	"testing"

	"github.com/heraldhq/herald/credentials"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/auth"
	"github.com/heraldhq/herald/server/gateway"
)

// With authentication on, a service publishes to its own topics and
// pulls groups of its subscribe topics only.
func TestGatewayAuthorization(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{Auth: true})
	mine, other := newTopic(t, srv), newTopic(t, srv)
	b, _, err := srv.Auth().AddService(t.Context(), auth.ServiceSpec{Name: testenv.Unique("svc"), Publish: []string{mine}, Subscribe: []string{mine}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	creds, err := credentials.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	svc := &http.Client{Transport: creds.Transport(http.DefaultTransport)}
	admin, err := credentials.Load(srv.AdminCredsPath())
	if err != nil {
		t.Fatal(err)
	}
	adminHC := &http.Client{Transport: admin.Transport(http.DefaultTransport)}
	api, err := gateway.NewAPIClient(srv.AdminURL(), adminHC)
	if err != nil {
		t.Fatal(err)
	}
	mineGroup, otherGroup := testenv.Unique("g"), testenv.Unique("g")
	for g, topic := range map[string]string{mineGroup: mine, otherGroup: other} {
		if _, err := api.Create(t.Context(), gateway.Subscription{Group: g, Topic: topic}); err != nil {
			t.Fatal(err)
		}
	}
	send := func(hc *http.Client, method, url string, h map[string]string) int {
		t.Helper()
		req, _ := http.NewRequest(method, url, nil)
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	ev := map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "a1", "Ce-Source": "s", "Ce-Type": "a.b"}
	for _, tc := range []struct {
		name   string
		hc     *http.Client
		method string
		url    string
		status int
	}{
		{"no credentials", http.DefaultClient, http.MethodPost, ingestURL(srv, mine), 401},
		{"publish to its topic", svc, http.MethodPost, ingestURL(srv, mine), 202},
		{"publish to another topic", svc, http.MethodPost, ingestURL(srv, other), 403},
		{"pull a group of its topic", svc, http.MethodGet, srv.AdminURL() + "/v1/groups/" + mineGroup + "/events?wait=10ms", 200},
		{"pull a group of another topic", svc, http.MethodGet, srv.AdminURL() + "/v1/groups/" + otherGroup + "/events?wait=10ms", 403},
		{"create a subscription", svc, http.MethodPost, srv.AdminURL() + "/api/v1/subscriptions", 403},
		{"admin publishes anywhere", adminHC, http.MethodPost, ingestURL(srv, other), 202},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := send(tc.hc, tc.method, tc.url, ev); got != tc.status {
				t.Fatalf("status %d, want %d", got, tc.status)
			}
		})
	}
}
