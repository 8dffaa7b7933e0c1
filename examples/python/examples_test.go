// Package python runs the Python examples against an in-process Herald.
package python

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/servertest"
)

func startServer(t *testing.T) *server.Server {
	t.Helper()
	return servertest.Start(t, server.Config{Audit: server.AuditConfig{Store: server.AuditOff}})
}

func python(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("python3")
	if err != nil {
		if testenv.InCI() {
			t.Fatal("python3 is not installed")
		}
		t.Skip("python3 is not installed")
	}
	return p
}

// run runs a script with args and returns its last line of output.
func run(t *testing.T, srv *server.Server, script string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, python(t), append([]string{"-B", script, "--url", srv.AdminURL()}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout: %s\nstderr: %s", script, err, out.String(), errb.String())
	}
	return string(bytes.TrimSpace(out.Bytes()))
}

// collect runs a Go consumer group on topic and returns what it got so far.
func collect(t *testing.T, srv *server.Server, topic string) func() map[string]*event.Event {
	t.Helper()
	c, err := herald.Connect(t.Context(), herald.Config{URL: srv.NATSURL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	r, err := c.Router(testenv.Unique("go"), []string{topic}, consumer.WithStart(broker.FromFirst))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	got := map[string]*event.Event{}
	r.HandleAll(func(_ context.Context, m *consumer.Message) error {
		mu.Lock()
		got[m.Event.ID] = m.Event
		mu.Unlock()
		return nil
	})
	testenv.RunRouter(t, r)
	return func() map[string]*event.Event {
		mu.Lock()
		defer mu.Unlock()
		out := make(map[string]*event.Event, len(got))
		for k, v := range got {
			out[k] = v
		}
		return out
	}
}

func await(t *testing.T, what string, n int, got func() map[string]*event.Event) map[string]*event.Event {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		g := got()
		if len(g) >= n {
			return g
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 60s for %d %s; got %d", n, what, len(g))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The order producer publishes 1,000 events over HTTP; a Go consumer gets
// every one.
func TestOrderProducer(t *testing.T) {
	t.Parallel()
	python(t)
	srv := startServer(t)
	topic := testenv.Unique("orders")
	out := run(t, srv, "order_producer.py", "--topic", topic, "--count", "1000", "--batch", "100")
	var res struct{ Published int }
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Published != 1000 {
		t.Fatalf("producer printed %q", out)
	}
	got := await(t, "orders at the Go consumer", 1000, collect(t, srv, topic))
	if len(got) != 1000 {
		t.Fatalf("Go consumer got %d distinct events", len(got))
	}
	for _, e := range got {
		var o struct {
			OrderID string `json:"order_id"`
			Total   int    `json:"total_cents"`
		}
		if err := json.Unmarshal(e.Data, &o); err != nil || e.Type != "shop.order.placed.v1" || e.Subject != o.OrderID ||
			e.CorrelationID != "checkout-"+o.OrderID || o.Total <= 0 || e.Source != "orders-py" {
			t.Fatalf("event %+v (data %s, %v)", e, e.Data, err)
		}
	}
}

// The payment consumer pulls orders a Go service published and publishes
// a payment per order, correlated and caused by it.
func TestPaymentConsumer(t *testing.T) {
	t.Parallel()
	python(t)
	srv := startServer(t)
	orders, payments := testenv.Unique("orders"), testenv.Unique("payments")
	if err := srv.Broker().EnsureTopic(t.Context(), orders, broker.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	c, err := herald.Connect(t.Context(), herald.Config{URL: srv.NATSURL(), Source: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 50
	sent := map[string]*event.Event{}
	for i := range n {
		total := 1000 + i
		if i%10 == 0 {
			total = 200000 // over the card limit
		}
		e := event.New("orders", "shop.order.placed.v1", fmt.Appendf(nil, `{"order_id":"o-%d","total_cents":%d}`, i, total))
		e.Subject, e.DataContentType, e.CorrelationID = fmt.Sprintf("o-%d", i), "application/json", fmt.Sprintf("checkout-%d", i)
		sent[e.ID] = e
		if err := c.PublishTo(t.Context(), orders, e); err != nil {
			t.Fatal(err)
		}
	}
	out := run(t, srv, "payment_consumer.py", "--orders", orders, "--payments", payments, "--group", testenv.Unique("pay"), "--count", fmt.Sprint(n))
	if out != fmt.Sprintf(`{"handled": %d}`, n) {
		t.Fatalf("consumer printed %q", out)
	}
	got := await(t, "payments", n, collect(t, srv, payments))
	failed := 0
	for _, p := range got {
		o := sent[p.CausationID]
		if o == nil || p.CorrelationID != o.CorrelationID || p.Subject != o.Subject || p.ID != "pay-"+o.ID {
			t.Fatalf("payment %+v does not match an order", p)
		}
		if p.Type == "shop.payment.failed.v1" {
			failed++
		}
	}
	if failed != n/10 {
		t.Fatalf("%d payments failed, want %d (the orders over the card limit)", failed, n/10)
	}
}
