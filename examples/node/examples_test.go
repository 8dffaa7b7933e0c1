// Package node runs the Node.js examples against an in-process Herald.
package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/gateway"
	"github.com/heraldhq/herald/server/servertest"
)

func nodeBin(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("node")
	if err != nil {
		if testenv.InCI() {
			t.Fatal("node is not installed")
		}
		t.Skip("node is not installed")
	}
	return p
}

// The Node order producer publishes over HTTP; Herald pushes each order to
// the Node payment webhook, which verifies the signature and publishes a
// payment over HTTP; a Go consumer gets a payment per order.
func TestOrderProducerAndPaymentWebhook(t *testing.T) {
	node := nodeBin(t)
	srv := servertest.Start(t, server.Config{Audit: server.AuditConfig{Store: server.AuditOff}})
	orders, payments := testenv.Unique("orders"), testenv.Unique("payments")
	for _, topic := range []string{orders, payments} {
		if err := srv.Broker().EnsureTopic(t.Context(), topic, broker.TopicConfig{}); err != nil {
			t.Fatal(err)
		}
	}

	// The webhook.
	secret := gateway.NewSecret()
	ctx, cancel := context.WithCancel(context.Background())
	hook := exec.CommandContext(ctx, node, "payment_webhook.js", "--url", srv.AdminURL(), "--port", "0", "--payments", payments)
	hook.Env = append(os.Environ(), "HERALD_WEBHOOK_SECRET="+secret)
	var hookErr bytes.Buffer
	hook.Stderr = &hookErr
	stdout, err := hook.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := hook.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = hook.Wait()
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	var port string
	select {
	case l := <-lines:
		port = strings.TrimPrefix(l, "listening ")
	case <-time.After(30 * time.Second):
		t.Fatalf("webhook did not start in 30s: %s", hookErr.String())
	}

	api, err := gateway.NewAPIClient(srv.AdminURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.Create(t.Context(), gateway.Subscription{Group: testenv.Unique("payments-node"), Topic: orders,
		Push: "http://127.0.0.1:" + port + "/", Secret: secret, Start: "first"}); err != nil {
		t.Fatal(err)
	}

	// A Go consumer of the payments.
	c, err := herald.Connect(t.Context(), herald.Config{URL: srv.NATSURL()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Router(testenv.Unique("go"), []string{payments}, consumer.WithStart(broker.FromFirst))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	got := map[string]*event.Event{}
	r.HandleAll(func(_ context.Context, m *consumer.Message) error {
		mu.Lock()
		got[m.Event.Subject] = m.Event
		mu.Unlock()
		return nil
	})
	testenv.RunRouter(t, r)

	const n = 200
	pctx, pcancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer pcancel()
	out, err := exec.CommandContext(pctx, node, "order_producer.js", "--url", srv.AdminURL(), "--topic", orders, "--count", fmt.Sprint(n), "--batch", "50").CombinedOutput()
	if err != nil {
		t.Fatalf("order_producer.js: %v: %s", err, out)
	}
	var res struct{ Published int }
	if err := json.Unmarshal(bytes.TrimSpace(out), &res); err != nil || res.Published != n {
		t.Fatalf("producer printed %q", out)
	}

	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		k := len(got)
		mu.Unlock()
		if k >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 60s for %d payments; got %d; webhook stderr: %s", n, k, hookErr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range n {
		p := got[fmt.Sprintf("o-%d", i)]
		total := 500 + (i*7919)%150000
		want := "shop.payment.taken.v1"
		if total > 100000 {
			want = "shop.payment.failed.v1"
		}
		if p == nil || p.Type != want || p.CorrelationID != fmt.Sprintf("checkout-o-%d", i) || p.ID != "pay-"+p.CausationID || p.Source != "payments-node" {
			t.Fatalf("payment of order o-%d: %+v, want %s", i, p, want)
		}
	}
}
