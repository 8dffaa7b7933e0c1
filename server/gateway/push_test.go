package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/gateway"
)

// hook is a webhook receiver that verifies signatures and records what
// it accepted.
type hook struct {
	t      *testing.T
	secret string
	answer func(id string, n int) int // status for the n-th request (from 1)

	mu       sync.Mutex
	requests int
	badSigs  int
	accepted []delivered
	seen     map[string]int
}

type delivered struct {
	id, key string
	n       int
}

func newHook(t *testing.T, answer func(id string, n int) int) (*hook, *httptest.Server) {
	h := &hook{t: t, answer: answer, seen: map[string]int{}}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return h, srv
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	h.requests++
	n := h.requests
	secret := h.secret
	h.mu.Unlock()
	if err := gateway.Verify(secret, r.Header, body, 0); err != nil {
		h.mu.Lock()
		h.badSigs++
		h.mu.Unlock()
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	id := r.Header.Get("Ce-Id")
	if id != r.Header.Get(gateway.HeaderWebhookID) || r.Header.Get("Ce-Specversion") != "1.0" {
		http.Error(w, "not a binary-mode CloudEvent", http.StatusBadRequest)
		return
	}
	code := http.StatusOK
	if h.answer != nil {
		code = h.answer(id, n)
	}
	if code < 300 {
		var p struct{ N int }
		_ = json.Unmarshal(body, &p)
		h.mu.Lock()
		h.accepted = append(h.accepted, delivered{id: id, key: r.Header.Get("Ce-Subject"), n: p.N})
		h.seen[id]++
		h.mu.Unlock()
	}
	w.WriteHeader(code)
}

func (h *hook) snapshot() (accepted []delivered, seen map[string]int, requests, badSigs int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	seen = make(map[string]int, len(h.seen))
	for k, v := range h.seen {
		seen[k] = v
	}
	return append([]delivered(nil), h.accepted...), seen, h.requests, h.badSigs
}

// subscribe creates a subscription through the admin API.
func subscribe(t *testing.T, srv *server.Server, s gateway.Subscription) gateway.SubscriptionStatus {
	t.Helper()
	code, body := post(t, srv.AdminURL()+"/api/v1/subscriptions", map[string]string{"Content-Type": "application/json"}, mustJSON(t, s))
	if code != http.StatusCreated {
		t.Fatalf("create subscription: status %d: %s", code, body)
	}
	var st gateway.SubscriptionStatus
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	if st.State != "running" {
		t.Fatalf("subscription %s is %s: %s", st.Group, st.State, st.Error)
	}
	return st
}

// publish publishes n events over keys with the SDK; event i carries
// {"n": i}, ids are prefix-i.
func publish(t *testing.T, srv *server.Server, topic, prefix string, from, n, keys int) {
	t.Helper()
	cl, err := herald.Connect(t.Context(), herald.Config{URL: srv.NATSURL(), Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var batch []*event.Event
	for i := from; i < from+n; i++ {
		e := event.New("test", "shop.order.placed.v1", []byte(fmt.Sprintf(`{"n":%d}`, i)))
		e.ID = fmt.Sprintf("%s-%d", prefix, i)
		e.Subject = fmt.Sprintf("k%d", i%keys)
		e.DataContentType = "application/json"
		batch = append(batch, e)
		if len(batch) == 100 || i == from+n-1 {
			if err := cl.PublishTo(t.Context(), topic, batch...); err != nil {
				t.Fatal(err)
			}
			batch = nil
		}
	}
}

func checkOrder(t *testing.T, acc []delivered) {
	t.Helper()
	last := map[string]int{}
	for _, d := range acc {
		if p, ok := last[d.key]; ok && d.n < p {
			t.Fatalf("key %s: event %d delivered after %d", d.key, d.n, p)
		}
		last[d.key] = d.n
	}
}

func TestPushEveryEventOnceInOrderSigned(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{})
	topic := newTopic(t, srv)
	h, hs := newHook(t, nil)
	h.secret = gateway.NewSecret()
	subscribe(t, srv, gateway.Subscription{Group: testenv.Unique("push"), Topic: topic, Push: hs.URL, Secret: h.secret, Concurrency: 8})
	const n = 500
	publish(t, srv, topic, "e", 0, n, 10)
	eventually(t, 60*time.Second, fmt.Sprintf("%d events at the webhook", n), func() (bool, string) {
		_, seen, reqs, bad := h.snapshot()
		return len(seen) == n, fmt.Sprintf("%d distinct, %d requests, %d bad signatures", len(seen), reqs, bad)
	})
	acc, seen, reqs, bad := h.snapshot()
	if bad != 0 || reqs != n || len(acc) != n {
		t.Fatalf("%d requests, %d accepted, %d bad signatures: want each of %d events once, signed", reqs, len(acc), bad, n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("event %s delivered %d times", id, c)
		}
	}
	checkOrder(t, acc)
}

func TestPushRetriesServerErrorsThenCatchesUp(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{})
	topic := newTopic(t, srv)
	var failing atomic.Bool
	failing.Store(true)
	h, hs := newHook(t, func(string, int) int {
		if failing.Load() {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	h.secret = gateway.NewSecret()
	subscribe(t, srv, gateway.Subscription{Group: testenv.Unique("push"), Topic: topic, Push: hs.URL, Secret: h.secret, Concurrency: 4,
		MaxAttempts: 1000, RetryInitial: gateway.Duration(20 * time.Millisecond), RetryMax: gateway.Duration(100 * time.Millisecond)})
	const n = 200
	publish(t, srv, topic, "e", 0, n, 5)
	eventually(t, 30*time.Second, "failed requests while the webhook answers 503", func() (bool, string) {
		_, _, reqs, _ := h.snapshot()
		return reqs >= 20, fmt.Sprintf("%d requests", reqs)
	})
	failing.Store(false)
	eventually(t, 60*time.Second, fmt.Sprintf("%d events at the webhook after it recovered", n), func() (bool, string) {
		_, seen, reqs, _ := h.snapshot()
		return len(seen) == n, fmt.Sprintf("%d distinct of %d requests", len(seen), reqs)
	})
	acc, seen, _, bad := h.snapshot()
	if bad != 0 || len(acc) != n {
		t.Fatalf("%d accepted, %d bad signatures: want each of %d events once", len(acc), bad, n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("event %s accepted %d times", id, c)
		}
	}
	checkOrder(t, acc)
}

func TestPushClientErrorGoesToDeadLetters(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{})
	topic := newTopic(t, srv)
	h, hs := newHook(t, func(id string, _ int) int {
		if strings.HasSuffix(id, "-3") || strings.HasSuffix(id, "-7") {
			return http.StatusBadRequest
		}
		return http.StatusOK
	})
	h.secret = gateway.NewSecret()
	group := testenv.Unique("push")
	subscribe(t, srv, gateway.Subscription{Group: group, Topic: topic, Push: hs.URL, Secret: h.secret})

	cl, err := herald.Connect(t.Context(), herald.Config{URL: srv.NATSURL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	r, err := cl.Router(testenv.Unique("dlq"), []string{consumer.DeadLetterTopic(topic)}, consumer.WithStart(broker.FromFirst))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	dead := map[string]map[string]string{}
	r.HandleAll(func(_ context.Context, m *consumer.Message) error {
		mu.Lock()
		dead[m.Event.ID] = m.Raw.Header
		mu.Unlock()
		return nil
	})
	testenv.RunRouter(t, r)

	publish(t, srv, topic, "e", 0, 10, 10)
	eventually(t, 30*time.Second, "2 dead letters and 8 deliveries", func() (bool, string) {
		mu.Lock()
		nd := len(dead)
		mu.Unlock()
		_, seen, _, _ := h.snapshot()
		return nd == 2 && len(seen) == 8, fmt.Sprintf("%d dead letters, %d delivered", nd, len(seen))
	})
	mu.Lock()
	defer mu.Unlock()
	for _, id := range []string{"e-3", "e-7"} {
		hd := dead[id]
		if hd == nil {
			t.Fatalf("event %s not dead-lettered; got %v", id, dead)
		}
		if !strings.Contains(hd[consumer.HeaderError], "answered 400") || hd[consumer.HeaderGroup] != group ||
			hd[consumer.HeaderOriginalTopic] != topic || hd[consumer.HeaderHandler] != "shop.order.placed.v1" {
			t.Errorf("dead letter of %s has context %v", id, hd)
		}
	}
	// A 4xx is not retried.
	if _, _, reqs, _ := h.snapshot(); reqs != 10 {
		t.Errorf("webhook got %d requests for 10 events", reqs)
	}
	// The group's deliveries show in the SDK consumers' metrics.
	wants := []string{
		fmt.Sprintf(`herald_consumed_total{group=%q,outcome="ack",topic=%q,type="shop.order.placed.v1"} 8`, group, topic),
		fmt.Sprintf(`herald_consumed_total{group=%q,outcome="dlq",topic=%q,type="shop.order.placed.v1"} 2`, group, topic),
	}
	eventually(t, 30*time.Second, "the push group's outcomes on /metrics", func() (bool, string) {
		resp, err := http.Get(srv.AdminURL() + "/metrics")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		metrics, _ := io.ReadAll(resp.Body)
		for _, want := range wants {
			if !strings.Contains(string(metrics), want) {
				return false, "missing " + want
			}
		}
		return true, ""
	})
}

func TestPushResumesAfterRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := startServer(t, server.Config{DataDir: dir})
	topic := newTopic(t, srv)
	h, hs := newHook(t, func(string, int) int {
		time.Sleep(time.Millisecond) // a webhook that takes a moment
		return http.StatusOK
	})
	h.secret = gateway.NewSecret()
	subscribe(t, srv, gateway.Subscription{Group: testenv.Unique("push"), Topic: topic, Push: hs.URL, Secret: h.secret, Concurrency: 2})
	const n = 300
	publish(t, srv, topic, "a", 0, n, 7)
	eventually(t, 30*time.Second, "the first deliveries", func() (bool, string) {
		_, seen, _, _ := h.snapshot()
		return len(seen) >= 30, fmt.Sprintf("%d delivered", len(seen))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	_, before, _, _ := h.snapshot()
	if len(before) >= n {
		t.Fatalf("all %d events delivered before the restart: the test shows nothing", n)
	}

	srv2 := startServer(t, server.Config{DataDir: dir})
	publish(t, srv2, topic, "b", n, n, 7)
	eventually(t, 60*time.Second, fmt.Sprintf("all %d events at the webhook after the restart", 2*n), func() (bool, string) {
		_, seen, _, _ := h.snapshot()
		return len(seen) == 2*n, fmt.Sprintf("%d distinct delivered (%d before the restart)", len(seen), len(before))
	})
	if _, _, _, bad := h.snapshot(); bad != 0 {
		t.Fatalf("%d bad signatures", bad)
	}
	// The subscription is listed after the restart.
	resp, err := http.Get(srv2.AdminURL() + "/api/v1/subscriptions")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list []gateway.SubscriptionStatus
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || len(list) != 1 || list[0].State != "running" || list[0].Secret != "" {
		t.Fatalf("subscriptions after restart: %+v (%v); want one, running, secret not shown", list, err)
	}
}

// The CloudEvents sdk-go HTTP receiver takes push deliveries unchanged.
func TestPushToSDKGoReceiver(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{})
	topic := newTopic(t, srv)
	p, err := cloudevents.NewHTTP(cehttp.WithPort(0))
	if err != nil {
		t.Fatal(err)
	}
	ce, err := cloudevents.NewClient(p)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []cloudevents.Event
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- ce.StartReceiver(ctx, func(e cloudevents.Event) {
			mu.Lock()
			got = append(got, e)
			mu.Unlock()
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("receiver: %v", err)
		}
	})
	eventually(t, 10*time.Second, "the sdk-go receiver to listen", func() (bool, string) { return p.GetListeningPort() > 0, "no port" })
	url := fmt.Sprintf("http://127.0.0.1:%d/", p.GetListeningPort())
	subscribe(t, srv, gateway.Subscription{Group: testenv.Unique("sdk"), Topic: topic, Push: url})

	e := event.New("orders", "shop.order.placed.v1", []byte(`{"total":42}`))
	e.ID, e.Subject, e.DataContentType, e.CorrelationID = "sdk-1", "o-1", "application/json", "c-1"
	_ = e.SetExtension("tenant", "acme corp 50%")
	cl, err := herald.Connect(t.Context(), herald.Config{URL: srv.NATSURL()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.PublishTo(t.Context(), topic, e); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the event at the sdk-go receiver", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 1, fmt.Sprintf("%d received", len(got))
	})
	mu.Lock()
	r := got[0]
	mu.Unlock()
	if r.ID() != "sdk-1" || r.Source() != "orders" || r.Type() != "shop.order.placed.v1" || r.Subject() != "o-1" ||
		r.DataContentType() != "application/json" || string(r.Data()) != `{"total":42}` ||
		r.Extensions()["correlationid"] != "c-1" || r.Extensions()["tenant"] != "acme corp 50%" {
		t.Fatalf("sdk-go received %s", r)
	}
}
