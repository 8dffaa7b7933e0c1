package shop_test

import (
	"context"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/examples/shop"
)

// TestShopFlows runs the shop on the embedded broker for a few seconds
// and checks that orders flow through every service, refused payments
// ship nothing, and the notifications that fail on purpose are
// dead-lettered with their context.
func TestShopFlows(t *testing.T) {
	emb, err := natsjs.RunEmbedded(t.Context(), natsjs.EmbeddedConfig{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	b, err := natsjs.New(t.Context(), natsjs.WithEmbedded(emb))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	c, err := herald.Connect(t.Context(), herald.Config{Broker: b, Source: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	s := shop.New(c, shop.Config{Rate: 50, Retry: &consumer.RetryPolicy{MaxAttempts: 2, Backoff: consumer.Backoff{Initial: 100 * time.Millisecond, Max: time.Second, Multiplier: 2}}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for s.Stats.Notified.Load() < 20 || s.Stats.NotifyFailures.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("after 30s: placed %d, charged %d, shipped %d, notified %d, notify failures %d",
				s.Stats.Placed.Load(), s.Stats.Charged.Load(), s.Stats.Shipped.Load(), s.Stats.Notified.Load(), s.Stats.NotifyFailures.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	dlq, err := b.Subscribe(t.Context(), consumer.DeadLetterTopic(shop.TopicShipping), broker.SubscribeOptions{Group: "check", Start: broker.FromFirst})
	if err != nil {
		t.Fatal(err)
	}
	defer dlq.Close()
	dctx, dcancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer dcancel()
	d, err := dlq.Next(dctx)
	if err != nil {
		t.Fatalf("no dead letter from the failing notifications: %v", err)
	}
	if h := d.Message().Header; h[consumer.HeaderGroup] != "notifications" || h[consumer.HeaderAttempts] != "2" {
		t.Fatalf("dead letter headers %v", h)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if s.Stats.Shipped.Load() > s.Stats.Charged.Load() {
		t.Fatalf("shipped %d orders but charged only %d", s.Stats.Shipped.Load(), s.Stats.Charged.Load())
	}
}
