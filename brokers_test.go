package herald_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	_ "github.com/heraldhq/herald/broker/kafka" // registers kafka://
	"github.com/heraldhq/herald/broker/rabbitmq"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/idempotency"
	"github.com/heraldhq/herald/internal/testenv"
)

// TestSDKOnEveryBroker runs the same service code (typed publish, a
// router with per-key order, retries and a dead-letter queue) on every
// broker Herald selects by URL: the in-process one, embedded NATS, Kafka
// (kfake, in process) and RabbitMQ (the local server).
func TestSDKOnEveryBroker(t *testing.T) {
	for name, url := range brokerURLs() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, err := herald.Connect(t.Context(), herald.Config{URL: url(t), Source: "sdk-test"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close() })
			topic := "sdk-" + name + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
			if rb, ok := c.Broker().(*rabbitmq.Broker); ok {
				t.Cleanup(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					_ = rb.DeleteTopic(ctx, topic, "billing")
					_ = rb.DeleteTopic(ctx, consumer.DeadLetterTopic(topic), "ops")
				})
			}
			placed := herald.Type[OrderPlaced]("shop.order.placed.v1", herald.OnTopic(topic))

			const orders, perOrder = 20, 10
			var mu sync.Mutex
			last := map[string]int{}
			var violations []string
			seen := map[string]bool{}
			r, err := c.Router("billing", []string{topic}, consumer.WithStart(broker.FromFirst),
				consumer.WithRetry(consumer.RetryPolicy{MaxAttempts: 2, Backoff: consumer.Backoff{Initial: 100 * time.Millisecond, Max: time.Second, Multiplier: 2}}))
			if err != nil {
				t.Fatal(err)
			}
			herald.Handle(r, placed, func(ctx context.Context, o OrderPlaced, m *consumer.Message) error {
				if o.Total < 0 {
					return errors.New("negative total")
				}
				mu.Lock()
				defer mu.Unlock()
				// A repeat is an at-least-once redelivery; going back is a
				// violation.
				if prev, ok := last[o.ID]; ok && o.Total < prev {
					violations = append(violations, o.ID+": "+strconv.Itoa(o.Total)+" after "+strconv.Itoa(prev))
				}
				last[o.ID] = o.Total
				seen[o.ID+"/"+strconv.Itoa(o.Total)] = true
				return nil
			})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- r.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })
			select {
			case <-r.Ready():
			case err := <-done:
				t.Fatalf("Run: %v", err)
			}

			for i := range perOrder {
				for o := range orders {
					id := "o-" + strconv.Itoa(o)
					if err := placed.Publish(t.Context(), c, OrderPlaced{ID: id, Total: i}, herald.WithSubject(id)); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := placed.Publish(t.Context(), c, OrderPlaced{ID: "bad", Total: -1}, herald.WithSubject("bad")); err != nil {
				t.Fatal(err)
			}
			// The failing event lands in the dead-letter topic.
			dlq, err := c.Broker().Subscribe(t.Context(), consumer.DeadLetterTopic(topic), broker.SubscribeOptions{Group: "ops", Start: broker.FromFirst})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = dlq.Close() })
			dctx, dcancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer dcancel()
			d, err := dlq.Next(dctx)
			if err != nil {
				t.Fatalf("waiting for the dead letter: %v", err)
			}
			_ = d.Ack(dctx)
			if h := d.Message().Header[consumer.HeaderError]; !strings.Contains(h, "negative total") {
				t.Fatalf("dead letter error header %q", h)
			}
			deadline := time.Now().Add(60 * time.Second)
			for {
				mu.Lock()
				n := len(seen)
				mu.Unlock()
				if n >= orders*perOrder {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("handled %d of %d events", n, orders*perOrder)
				}
				time.Sleep(20 * time.Millisecond)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(violations) > 0 {
				t.Fatalf("order violations: %v", violations)
			}
		})
	}
}

// brokerURLs returns, by name, a function that gives the URL of each
// broker Herald selects by URL, skipping where one is not reachable.
func brokerURLs() map[string]func(t *testing.T) string {
	return map[string]func(t *testing.T) string{
		"memory": func(*testing.T) string { return "memory://" },
		"nats": func(t *testing.T) string {
			if emb.ClientURL() == "" {
				t.Skip("the embedded server has no listener")
			}
			return emb.ClientURL()
		},
		"kafka": func(t *testing.T) string { return testenv.Kafka(t) },
		"rabbitmq": func(t *testing.T) string {
			testenv.Need(t, "RabbitMQ", testenv.HostPort(testenv.RabbitURL))
			return testenv.RabbitURL
		},
	}
}

// TestExactlyOnceOnEveryBroker publishes an event twice with the same id
// (a producer retrying after a lost confirm) on every broker: NATS drops
// the copy in its dedup window, Kafka and RabbitMQ store both, and a
// router in exactly-once mode with an idempotency store handles it once
// either way.
func TestExactlyOnceOnEveryBroker(t *testing.T) {
	for name, url := range brokerURLs() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, err := herald.Connect(t.Context(), herald.Config{URL: url(t), Source: "eos-test"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close() })
			topic := "eos-" + name + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
			if rb, ok := c.Broker().(*rabbitmq.Broker); ok {
				t.Cleanup(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					_ = rb.DeleteTopic(ctx, topic, "ledger")
				})
			}
			var mu sync.Mutex
			handled := map[string]int{}
			r, err := c.Router("ledger", []string{topic}, consumer.WithStart(broker.FromFirst),
				consumer.WithMode(consumer.ExactlyOnce), consumer.WithIdempotency(idempotency.NewMemory(), 30*time.Second, time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			r.Handle("ledger.posted.v1", func(ctx context.Context, m *consumer.Message) error {
				mu.Lock()
				handled[string(m.Event.Data)]++
				mu.Unlock()
				return nil
			})
			testenv.RunRouter(t, r)
			ev := func(data string) *event.Event {
				e := event.New("eos-test", "ledger.posted.v1", []byte(data))
				e.Subject = "account-1" // one key: the copies come before the last event
				return e
			}
			once := ev("1")
			for range 2 {
				if err := c.PublishTo(t.Context(), topic, once); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.PublishTo(t.Context(), topic, ev("last")); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 60*time.Second, "the last event handled", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return handled["last"] == 1
			})
			mu.Lock()
			defer mu.Unlock()
			if handled["1"] != 1 {
				t.Fatalf("the event published twice was handled %d times, want 1", handled["1"])
			}
		})
	}
}
