package server_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/credentials"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/auth"
	"github.com/heraldhq/herald/server/servertest"
)

// secureServer starts a server with TLS (a throwaway CA) and auth on.
func secureServer(t testing.TB, mtls bool) (*server.Server, auth.DevTLS) {
	t.Helper()
	return secureServerWith(t, mtls, server.Config{})
}

// secureServerWith is secureServer with cfg's other settings.
func secureServerWith(t testing.TB, mtls bool, cfg server.Config) (*server.Server, auth.DevTLS) {
	t.Helper()
	dir := t.TempDir()
	dev, err := auth.GenerateDevTLS(filepath.Join(dir, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	files := &auth.TLSFiles{CertFile: dev.CertFile, KeyFile: dev.KeyFile}
	if mtls {
		files.ClientCAFile = dev.CAFile
	}
	cfg.DataDir, cfg.TLS, cfg.Auth = filepath.Join(dir, "data"), files, true
	srv := servertest.Start(t, cfg)
	return srv, dev
}

// httpClient trusts dev's CA, presents its client certificate, and
// authenticates with creds (nil: anonymous).
func httpClient(t testing.TB, dev auth.DevTLS, creds *credentials.Creds) *http.Client {
	t.Helper()
	tc, err := credentials.TLSConfig(dev.CAFile, dev.ClientCertFile, dev.ClientKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	var rt http.RoundTripper = &http.Transport{TLSClientConfig: tc}
	if creds != nil {
		rt = creds.Transport(rt)
	}
	return &http.Client{Transport: rt, Timeout: 30 * time.Second}
}

func call(t testing.TB, hc *http.Client, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func loadCreds(t testing.TB, text string) (*credentials.Creds, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "x.creds")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := credentials.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return c, p
}

// mint asks the admin API for credentials.
func mint(t testing.TB, hc *http.Client, srv *server.Server, path string, spec any) (*credentials.Creds, string) {
	t.Helper()
	b, _ := json.Marshal(spec)
	code, body := call(t, hc, "POST", srv.AdminURL()+path, string(b))
	if code != 200 {
		t.Fatalf("POST %s: %d %s", path, code, body)
	}
	var resp auth.CredentialsResponse
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatal(err)
	}
	return loadCreds(t, resp.Credentials)
}

func natsConnect(t *testing.T, srv *server.Server, dev auth.DevTLS, opts ...nats.Option) (*nats.Conn, error) {
	t.Helper()
	all := append([]nats.Option{nats.RootCAs(dev.CAFile), nats.ClientCert(dev.ClientCertFile, dev.ClientKeyFile),
		nats.Timeout(5 * time.Second), nats.MaxReconnects(0)}, opts...)
	nc, err := nats.Connect(srv.NATSURL(), all...)
	if err == nil {
		t.Cleanup(nc.Close)
	}
	return nc, err
}

func TestSecureServerRejectsStrangers(t *testing.T) {
	t.Parallel()
	srv, dev := secureServer(t, false)
	if !strings.HasPrefix(srv.NATSURL(), "tls://") || !strings.HasPrefix(srv.AdminURL(), "https://") || !strings.HasPrefix(srv.RegistryURL(), "https://") {
		t.Fatalf("URLs %s %s %s", srv.NATSURL(), srv.AdminURL(), srv.RegistryURL())
	}
	admin, _ := loadCredsFile(t, srv.AdminCredsPath())

	// NATS: no credentials, wrong credentials.
	if _, err := natsConnect(t, srv, dev); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("anonymous NATS connection: %v", err)
	}
	stranger, strangerPath := strangerCreds(t)
	if _, err := natsConnect(t, srv, dev, nats.UserCredentials(strangerPath)); err == nil {
		t.Fatal("credentials of another operator were accepted")
	}
	if _, err := natsConnect(t, srv, dev, nats.UserCredentials(srv.AdminCredsPath())); err != nil {
		t.Fatalf("admin NATS connection: %v", err)
	}
	// Plain TCP on a TLS listener.
	if _, err := nats.Connect(strings.Replace(srv.NATSURL(), "tls://", "nats://", 1), nats.UserCredentials(srv.AdminCredsPath()), nats.Timeout(3*time.Second), nats.MaxReconnects(0)); err == nil {
		t.Fatal("a plain-text NATS connection was accepted")
	}

	// HTTP: every listener, no credentials, a bad token, a stranger's.
	anon := httpClient(t, dev, nil)
	for _, u := range []string{srv.AdminURL() + "/api/v1/topics", srv.AdminURL() + "/metrics", srv.RegistryURL() + "/subjects", srv.AdminURL() + "/api/v1/auth/identities"} {
		if code, body := call(t, anon, "GET", u, ""); code != 401 {
			t.Fatalf("anonymous GET %s: %d %s", u, code, body)
		}
		for _, hdr := range []string{"Bearer hrd_bogus", "Bearer a.b.c", "Basic YWRtaW46aHJkX3dyb25n"} {
			req, _ := http.NewRequestWithContext(t.Context(), "GET", u, nil)
			req.Header.Set("Authorization", hdr)
			resp, err := anon.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 401 {
				t.Fatalf("GET %s with %q: %d", u, hdr, resp.StatusCode)
			}
		}
		if code, _ := call(t, httpClient(t, dev, stranger), "GET", u, ""); code != 401 {
			t.Fatalf("stranger GET %s: %d", u, code)
		}
		if code, body := call(t, httpClient(t, dev, admin), "GET", u, ""); code != 200 {
			t.Fatalf("admin GET %s: %d %s", u, code, body)
		}
	}
	// Health checks stay open for load balancers.
	if code, _ := call(t, anon, "GET", srv.AdminURL()+"/readyz", ""); code != 200 {
		t.Fatalf("readyz: %d", code)
	}
	// Plain HTTP on a TLS listener.
	if resp, err := http.Get(strings.Replace(srv.AdminURL(), "https://", "http://", 1) + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP answered 200 on the TLS admin listener")
		}
	}
}

func loadCredsFile(t testing.TB, path string) (*credentials.Creds, string) {
	t.Helper()
	c, err := credentials.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return c, path
}

// strangerCreds returns credentials minted by an authority the server does
// not trust.
func strangerCreds(t *testing.T) (*credentials.Creds, string) {
	t.Helper()
	a, err := auth.OpenAuthority(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	u, err := a.MintUser("admin", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := credentials.Format(u.JWT, u.Seed, "hrd_notknownhere")
	if err != nil {
		t.Fatal(err)
	}
	return loadCreds(t, string(b))
}

func TestServicePermissionsEnforcedByTheBroker(t *testing.T) {
	t.Parallel()
	srv, dev := secureServer(t, false)
	admin, _ := loadCredsFile(t, srv.AdminCredsPath())
	ahc := httpClient(t, dev, admin)
	orders, ordersPath := mint(t, ahc, srv, "/api/v1/auth/services", auth.ServiceSpec{Name: "orders",
		Publish: []string{"shop.orders.>"}, Subscribe: []string{"shop.payments.>", "shop.inventory"}})
	if orders.InboxPrefix() != "_INBOX_orders" {
		t.Fatalf("inbox prefix %q", orders.InboxPrefix())
	}
	// The admin publishes to shop.payments, which orders may read.
	anc, err := natsConnect(t, srv, dev, nats.UserCredentials(srv.AdminCredsPath()))
	if err != nil {
		t.Fatal(err)
	}
	ajs, _ := jetstream.New(anc)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := ajs.Publish(ctx, "shop_payments.0.shop.payment.taken.v1", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}

	// A raw nats.go client with the service's credentials.
	var violations atomic.Int32
	nc, err := natsConnect(t, srv, dev, nats.UserCredentials(ordersPath), nats.CustomInboxPrefix(orders.InboxPrefix()),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				violations.Add(1)
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(t.Context(), 2*time.Second) }

	// Allowed: publish to its topic.
	pctx, pcancel := short()
	if _, err := js.Publish(pctx, "shop_orders.3.shop.order.placed.v1", []byte(`{}`)); err != nil {
		t.Fatalf("publish to its own topic: %v", err)
	}
	pcancel()
	// Refused: publish to another service's topic; nothing is stored.
	before := streamMsgs(t, ajs, "shop_payments")
	pctx, pcancel = short()
	_, err = js.Publish(pctx, "shop_payments.0.shop.payment.taken.v1", []byte(`{"forged":true}`))
	pcancel()
	if err == nil {
		t.Fatal("publish to shop.payments succeeded")
	}
	waitFor(t, "a permissions violation reported", func() bool { return violations.Load() > 0 })
	if after := streamMsgs(t, ajs, "shop_payments"); after != before {
		t.Fatalf("shop_payments holds %d messages, had %d", after, before)
	}
	// Refused: a core subscription to a stream subject.
	nc2, err := natsConnect(t, srv, dev, nats.UserCredentials(ordersPath), nats.PermissionErrOnSubscribe(true))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := nc2.SubscribeSync("shop_payments.>")
	if err == nil {
		_, err = sub.NextMsg(2 * time.Second)
	}
	if !errors.Is(err, nats.ErrPermissionViolation) {
		t.Fatalf("core subscription to shop_payments.>: %v", err)
	}
	// Refused: the JetStream API beyond consuming.
	for name, op := range map[string]func(ctx context.Context) error{
		"delete a stream": func(ctx context.Context) error { return js.DeleteStream(ctx, "shop_payments") },
		"purge a stream": func(ctx context.Context) error {
			_, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.PURGE.shop_orders", nil)
			return err
		},
		"create a stream": func(ctx context.Context) error {
			_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "evil", Subjects: []string{"evil.>"}})
			return err
		},
		"create a KV bucket": func(ctx context.Context) error {
			_, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "evil"})
			return err
		},
		"delete the registry's bucket": func(ctx context.Context) error { return js.DeleteKeyValue(ctx, "herald_schemas") },
		"read the registry's bucket": func(ctx context.Context) error {
			_, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_herald_schemas", []byte(`{"seq":1}`))
			return err
		},
		"consume another topic": func(ctx context.Context) error {
			_, err := js.CreateOrUpdateConsumer(ctx, "shop_shipping", jetstream.ConsumerConfig{Durable: "orders"})
			return err
		},
		"consume a dead-letter topic": func(ctx context.Context) error {
			_, err := js.CreateOrUpdateConsumer(ctx, "shop_payments_dlq", jetstream.ConsumerConfig{Durable: "orders"})
			return err
		},
		"consume the audit topic": func(ctx context.Context) error {
			_, err := js.CreateOrUpdateConsumer(ctx, natsjs.StreamName(auth.AuditTopic), jetstream.ConsumerConfig{Durable: "orders"})
			return err
		},
		"delete a consumer": func(ctx context.Context) error { return js.DeleteConsumer(ctx, "shop_payments", "payments") },
	} {
		ctx, cancel := short()
		err := op(ctx)
		cancel()
		if err == nil {
			t.Fatalf("%s: allowed", name)
		}
	}
	if _, err := ajs.Stream(t.Context(), "shop_payments"); err != nil {
		t.Fatalf("shop_payments after the attempts: %v", err)
	}
	if _, err := ajs.Stream(t.Context(), "evil"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("stream evil: %v", err)
	}
	// Allowed: consume its subscribe topic with a durable consumer.
	cctx, ccancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer ccancel()
	c, err := js.CreateOrUpdateConsumer(cctx, "shop_payments", jetstream.ConsumerConfig{Durable: "orders", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("consume its own subscribe topic: %v", err)
	}
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range batch.Messages() {
		if err := m.DoubleAck(cctx); err != nil {
			t.Fatalf("ack: %v", err)
		}
		n++
	}
	if n != 1 {
		t.Fatalf("fetched %d messages, want 1 (%v)", n, batch.Error())
	}
	// Allowed: dead letters of its subscribe topics.
	pctx, pcancel = short()
	if _, err := js.Publish(pctx, "shop_payments_dlq.0.shop.payment.taken.v1", []byte(`{}`)); err != nil {
		t.Fatalf("dead-letter to shop.payments.dlq: %v", err)
	}
	pcancel()
}

func streamMsgs(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	st, err := js.Stream(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().State.Msgs
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 30s waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRevokedCredentialsStopWorking(t *testing.T) {
	t.Parallel()
	srv, dev := secureServer(t, false)
	admin, _ := loadCredsFile(t, srv.AdminCredsPath())
	ahc := httpClient(t, dev, admin)
	svc, svcPath := mint(t, ahc, srv, "/api/v1/auth/services", auth.ServiceSpec{Name: "billing", Publish: []string{"bills"}})
	closed := make(chan struct{})
	nc, err := natsConnect(t, srv, dev, nats.UserCredentials(svcPath), nats.CustomInboxPrefix(svc.InboxPrefix()),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatal(err)
	}
	shc := httpClient(t, dev, svc)
	if code, body := call(t, shc, "GET", srv.RegistryURL()+"/subjects", ""); code != 200 {
		t.Fatalf("service reads the registry: %d %s", code, body)
	}
	start := time.Now()
	if code, body := call(t, ahc, "DELETE", srv.AdminURL()+"/api/v1/auth/identities/billing", ""); code != 200 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatalf("connection of revoked credentials still open after 5s (status %v)", nc.Status())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("revocation took %v", d)
	}
	if _, err := natsConnect(t, srv, dev, nats.UserCredentials(svcPath)); err == nil {
		t.Fatal("revoked credentials connect again")
	}
	if code, _ := call(t, shc, "GET", srv.RegistryURL()+"/subjects", ""); code != 401 {
		t.Fatalf("revoked token on the registry: %d", code)
	}
}

func TestRotateWithoutRestart(t *testing.T) {
	t.Parallel()
	srv, dev := secureServer(t, false)
	admin, _ := loadCredsFile(t, srv.AdminCredsPath())
	ahc := httpClient(t, dev, admin)
	old, oldPath := mint(t, ahc, srv, "/api/v1/auth/services", auth.ServiceSpec{Name: "ship", Publish: []string{"shipping"}})
	code, body := call(t, ahc, "POST", srv.AdminURL()+"/api/v1/auth/identities/ship/rotate", "")
	if code != 200 {
		t.Fatalf("rotate: %d %s", code, body)
	}
	var resp auth.CredentialsResponse
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatal(err)
	}
	fresh, freshPath := loadCreds(t, resp.Credentials)
	if _, err := natsConnect(t, srv, dev, nats.UserCredentials(oldPath)); err == nil {
		t.Fatal("old credentials still connect after rotation")
	}
	if _, err := natsConnect(t, srv, dev, nats.UserCredentials(freshPath)); err != nil {
		t.Fatalf("rotated credentials: %v", err)
	}
	if code, _ := call(t, httpClient(t, dev, old), "GET", srv.RegistryURL()+"/subjects", ""); code != 401 {
		t.Fatalf("old token: %d", code)
	}
	if code, _ := call(t, httpClient(t, dev, fresh), "GET", srv.RegistryURL()+"/subjects", ""); code != 200 {
		t.Fatalf("new token: %d", code)
	}
}

func TestRegistryRoles(t *testing.T) {
	t.Parallel()
	srv, dev := secureServer(t, false)
	admin, _ := loadCredsFile(t, srv.AdminCredsPath())
	ahc := httpClient(t, dev, admin)
	reader, _ := mint(t, ahc, srv, "/api/v1/auth/users", auth.UserSpec{Name: "rita", Role: auth.RoleReader})
	writer, _ := mint(t, ahc, srv, "/api/v1/auth/users", auth.UserSpec{Name: "wes", Role: auth.RoleWriter, Subjects: []string{"shop.orders"}})
	svc, _ := mint(t, ahc, srv, "/api/v1/auth/services", auth.ServiceSpec{Name: "orders", Publish: []string{"shop.orders"}})
	schema := `{"schema":"\"string\""}`
	for _, tc := range []struct {
		name   string
		c      *credentials.Creds
		method string
		path   string
		body   string
		code   int
	}{
		{"reader reads", reader, "GET", "/subjects", "", 200},
		{"reader cannot register", reader, "POST", "/subjects/shop.orders-value/versions", schema, 403},
		{"reader cannot configure", reader, "PUT", "/config", `{"compatibility":"NONE"}`, 403},
		{"writer registers under its prefix", writer, "POST", "/subjects/shop.orders-value/versions", schema, 200},
		{"writer cannot register elsewhere", writer, "POST", "/subjects/shop.payments-value/versions", schema, 403},
		{"writer cannot look alike prefix", writer, "POST", "/subjects/shop.ordersx-value/versions", schema, 403},
		{"writer cannot delete", writer, "DELETE", "/subjects/shop.orders-value", "", 403},
		{"writer cannot configure", writer, "PUT", "/config/shop.orders-value", `{"compatibility":"NONE"}`, 403},
		{"service registers under its topic", svc, "POST", "/subjects/shop.orders-key/versions", schema, 200},
		{"service cannot register elsewhere", svc, "POST", "/subjects/other-value/versions", schema, 403},
		{"service looks up", svc, "POST", "/subjects/shop.orders-value", schema, 200},
		{"service checks compatibility", svc, "POST", "/compatibility/subjects/shop.orders-value/versions/latest", schema, 200},
		{"encoded slash cannot escape", writer, "POST", "/subjects/shop.orders%2F..%2Fother/versions", schema, 400},
		{"admin deletes", admin, "DELETE", "/subjects/shop.orders-key", "", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := call(t, httpClient(t, dev, tc.c), tc.method, srv.RegistryURL()+tc.path, tc.body)
			if code != tc.code {
				t.Fatalf("%s %s: %d %s, want %d", tc.method, tc.path, code, body, tc.code)
			}
		})
	}
	// Readers read the admin API; only admins change things there.
	rhc := httpClient(t, dev, reader)
	if code, body := call(t, rhc, "GET", srv.AdminURL()+"/api/v1/dlq", ""); code != 200 {
		t.Fatalf("reader lists DLQs: %d %s", code, body)
	}
	if code, _ := call(t, rhc, "POST", srv.AdminURL()+"/api/v1/dlq/redrive", `{"dry_run":true}`); code != 403 {
		t.Fatalf("reader redrives: %d", code)
	}
	if code, _ := call(t, httpClient(t, dev, svc), "GET", srv.AdminURL()+"/api/v1/dlq", ""); code != 403 {
		t.Fatalf("service reads dead letters: %d", code)
	}
	if code, _ := call(t, rhc, "GET", srv.AdminURL()+"/api/v1/auth/identities", ""); code != 403 {
		t.Fatalf("reader lists identities: %d", code)
	}
}

func TestMutualTLSRefusesAnotherCA(t *testing.T) {
	t.Parallel()
	srv, dev := secureServer(t, true)
	other, err := auth.GenerateDevTLS(filepath.Join(t.TempDir(), "other"))
	if err != nil {
		t.Fatal(err)
	}
	// A client certificate of another CA, and none at all: refused on
	// every listener.
	for name, certs := range map[string][2]string{"other CA": {other.ClientCertFile, other.ClientKeyFile}, "no certificate": {"", ""}} {
		tc, err := credentials.TLSConfig(dev.CAFile, certs[0], certs[1])
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
		for _, u := range []string{srv.AdminURL() + "/healthz", srv.RegistryURL() + "/"} {
			if resp, err := hc.Get(u); err == nil {
				resp.Body.Close()
				t.Fatalf("%s: GET %s answered %d", name, u, resp.StatusCode)
			}
		}
		opts := []nats.Option{nats.Secure(tc), nats.UserCredentials(srv.AdminCredsPath()), nats.Timeout(5 * time.Second), nats.MaxReconnects(0)}
		if nc, err := nats.Connect(srv.NATSURL(), opts...); err == nil {
			nc.Close()
			t.Fatalf("%s: NATS connection accepted", name)
		}
	}
	// The right one works.
	tc, _ := credentials.TLSConfig(dev.CAFile, dev.ClientCertFile, dev.ClientKeyFile)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
	resp, err := hc.Get(srv.AdminURL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, err := natsConnect(t, srv, dev, nats.UserCredentials(srv.AdminCredsPath())); err != nil {
		t.Fatal(err)
	}
	// A server certificate of another CA is refused by clients.
	tc2, _ := credentials.TLSConfig(other.CAFile, dev.ClientCertFile, dev.ClientKeyFile)
	if _, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: tc2}}).Get(srv.AdminURL() + "/healthz"); err == nil {
		t.Fatal("a client trusting another CA accepted the server")
	}
	_ = tls.VersionTLS12
}

func TestAdminActionsAudited(t *testing.T) {
	t.Parallel()
	srv, dev := secureServer(t, false)
	admin, _ := loadCredsFile(t, srv.AdminCredsPath())
	ahc := httpClient(t, dev, admin)
	mint(t, ahc, srv, "/api/v1/auth/services", auth.ServiceSpec{Name: "audited", Publish: []string{"things"}})
	if code, body := call(t, ahc, "DELETE", srv.AdminURL()+"/api/v1/dlq/things?confirm=things", ""); code != 200 {
		t.Fatalf("purge: %d %s", code, body)
	}
	if code, body := call(t, ahc, "POST", srv.RegistryURL()+"/subjects/things-value/versions", `{"schema":"\"int\""}`); code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}
	if code, body := call(t, ahc, "DELETE", srv.RegistryURL()+"/subjects/things-value", ""); code != 200 {
		t.Fatalf("delete subject: %d %s", code, body)
	}
	var last string
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last audit page: %s", last)
		}
	})
	want := []string{"POST /api/v1/auth/services", "DELETE /api/v1/dlq/things", "DELETE /subjects/things-value"}
	waitFor(t, "the actions in the audit log", func() bool {
		code, body := call(t, ahc, "GET", srv.AdminURL()+"/api/v1/audit?type="+server.ActionType+"&subject=admin", "")
		if code != 200 {
			return false
		}
		last = body
		for _, w := range want {
			m, p, _ := strings.Cut(w, " ")
			if !strings.Contains(body, fmt.Sprintf(`"method":"%s","path":"%s"`, m, p)) {
				return false
			}
		}
		return strings.Contains(body, `"actor":"admin"`)
	})
}

// TestSDKRunsWithServiceCredentials: a service built on the SDK publishes,
// consumes with a key-ordered router and dead-letters with nothing but its
// own credentials, and is told clearly when it publishes outside them.
func TestSDKRunsWithServiceCredentials(t *testing.T) {
	t.Parallel()
	srv, dev := secureServer(t, false)
	admin, _ := loadCredsFile(t, srv.AdminCredsPath())
	ahc := httpClient(t, dev, admin)
	_, payPath := mint(t, ahc, srv, "/api/v1/auth/services", auth.ServiceSpec{Name: "payments",
		Publish: []string{"shop.payments"}, Subscribe: []string{"shop.orders"}})
	_, ordPath := mint(t, ahc, srv, "/api/v1/auth/services", auth.ServiceSpec{Name: "orders", Publish: []string{"shop.orders"}})
	orders := connectService(t, srv, dev, ordPath, "orders")
	payments := connectService(t, srv, dev, payPath, "payments")

	r, err := payments.Router("payments", []string{"shop.orders"}, consumer.WithoutRetry(), consumer.WithStart(broker.FromFirst))
	if err != nil {
		t.Fatal(err)
	}
	var handled atomic.Int32
	r.HandleAll(func(ctx context.Context, m *consumer.Message) error {
		if m.Event.Subject == "bad" {
			return consumer.Permanent(errors.New("cannot charge"))
		}
		handled.Add(1)
		ev := event.New("", "shop.payment.taken.v1", []byte(`{}`))
		return payments.PublishTo(ctx, "shop.payments", ev)
	})
	testenv.RunRouter(t, r)
	for _, subj := range []string{"o-1", "bad", "o-2"} {
		ev := event.New("", "shop.order.placed.v1", []byte(`{}`))
		ev.Subject = subj
		if err := orders.PublishTo(t.Context(), "shop.orders", ev); err != nil {
			t.Fatal(err)
		}
	}
	anc, err := natsConnect(t, srv, dev, nats.UserCredentials(srv.AdminCredsPath()))
	if err != nil {
		t.Fatal(err)
	}
	ajs, _ := jetstream.New(anc)
	waitFor(t, "two payments and one dead letter", func() bool {
		return handled.Load() == 2 && streamMsgs(t, ajs, "shop_payments") == 2 && streamMsgs(t, ajs, "shop_orders_dlq") == 1
	})
	// Outside its allowance: refused at once, with a clear error.
	start := time.Now()
	err = orders.PublishTo(t.Context(), "shop.payments", event.New("", "shop.payment.taken.v1", []byte(`{}`)))
	if !errors.Is(err, herald.ErrPermission) || !strings.Contains(err.Error(), `"shop.payments"`) {
		t.Fatalf("publish outside the allowance: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("refusal took %v", d)
	}
}

// TestConfluentClientBasicAuth: a Confluent client (franz-go's sr) with
// basic auth NAME:TOKEN, as basic.auth.user.info gives it, works
// unchanged; a wrong password does not.
func TestConfluentClientBasicAuth(t *testing.T) {
	t.Parallel()
	srv, dev := secureServer(t, false)
	admin, _ := loadCredsFile(t, srv.AdminCredsPath())
	svc, _ := mint(t, httpClient(t, dev, admin), srv, "/api/v1/auth/services", auth.ServiceSpec{Name: "orders", Publish: []string{"shop.orders"}})
	tc, _ := credentials.TLSConfig(dev.CAFile, "", "")
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
	c, err := sr.NewClient(sr.URLs(srv.RegistryURL()), sr.HTTPClient(hc), sr.BasicAuth(svc.Name(), svc.Token()))
	if err != nil {
		t.Fatal(err)
	}
	ss, err := c.CreateSchema(t.Context(), "shop.orders-value", sr.Schema{Schema: `"string"`})
	if err != nil {
		t.Fatalf("register with basic auth: %v", err)
	}
	if _, err := c.SchemaByID(t.Context(), ss.ID); err != nil {
		t.Fatal(err)
	}
	bad, _ := sr.NewClient(sr.URLs(srv.RegistryURL()), sr.HTTPClient(hc), sr.BasicAuth(svc.Name(), "hrd_wrong"))
	if _, err := bad.Subjects(t.Context()); err == nil {
		t.Fatal("a wrong password was accepted")
	}
}

// connectService connects the SDK to srv with the service credentials at
// path, trusting dev's CA.
func connectService(t *testing.T, srv *server.Server, dev auth.DevTLS, path, source string) *herald.Client {
	t.Helper()
	tc, err := credentials.TLSConfig(dev.CAFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := herald.Connect(t.Context(), herald.Config{URL: srv.NATSURL(), Credentials: path, TLS: tc, Source: source})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestServiceGroupCommitsOnSyncServer: a service whose credentials allow
// only its own topics still learns that the server fsyncs (durability
// sync) and group-commits its publishes.
func TestServiceGroupCommitsOnSyncServer(t *testing.T) {
	t.Parallel()
	srv, dev := secureServerWith(t, false, server.Config{Durability: natsjs.Sync})
	admin, _ := loadCredsFile(t, srv.AdminCredsPath())
	_, ordPath := mint(t, httpClient(t, dev, admin), srv, "/api/v1/auth/services", auth.ServiceSpec{Name: "orders", Publish: []string{"shop.orders"}})
	orders := connectService(t, srv, dev, ordPath, "orders")
	if nb, ok := orders.Broker().(*natsjs.Broker); !ok || !nb.GroupCommit() {
		t.Fatalf("a service on a sync server does not group-commit (%T)", orders.Broker())
	}
	var evs []*event.Event
	for range 50 {
		evs = append(evs, event.New("", "shop.order.placed.v1", []byte(`{}`)))
	}
	if err := orders.PublishTo(t.Context(), "shop.orders", evs...); err != nil {
		t.Fatal(err)
	}
}
