package herald_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	_ "github.com/heraldhq/herald/broker/kafka" // registers kafka://
	"github.com/heraldhq/herald/broker/rabbitmq"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/internal/testenv"
)

// TestSDKOnEveryBroker runs the same service code (typed publish, a
// router with per-key order, retries and a dead-letter queue) on every
// broker Herald selects by URL: the in-process one, embedded NATS, Kafka
// (kfake, in process) and RabbitMQ (the local server).
func TestSDKOnEveryBroker(t *testing.T) {
	urls := map[string]func(t *testing.T) string{
		"memory": func(*testing.T) string { return "memory://" },
		"nats": func(t *testing.T) string {
			if emb.ClientURL() == "" {
				t.Skip("the embedded server has no listener")
			}
			return emb.ClientURL()
		},
		"kafka": func(t *testing.T) string {
			c, err := kfake.NewCluster(kfake.NumBrokers(1))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			return "kafka://" + strings.Join(c.ListenAddrs(), ",")
		},
		"rabbitmq": func(t *testing.T) string {
			testenv.Need(t, "RabbitMQ", testenv.HostPort(testenv.RabbitURL))
			return testenv.RabbitURL
		},
	}
	for name, url := range urls {
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
