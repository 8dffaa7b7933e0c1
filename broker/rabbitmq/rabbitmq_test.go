package rabbitmq

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testURL returns the broker URL for tests, skipping (or, with CI=true,
// failing) when it is unreachable.
func testURL(t testing.TB) string {
	t.Helper()
	url := os.Getenv("HERALD_TEST_RABBITMQ_URL")
	if url == "" {
		url = "amqp://guest:guest@127.0.0.1:5672/"
	}
	reach.Do(func() {
		c, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(3 * time.Second)})
		if err != nil {
			reachErr = err
			return
		}
		_ = c.Close()
	})
	if reachErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("RabbitMQ unreachable at %s with CI=true: %v", redact(url), reachErr)
		}
		t.Skipf("RabbitMQ unreachable at %s: %v", redact(url), reachErr)
	}
	return url
}

var (
	reach    sync.Once
	reachErr error
)

// tracked wraps a Broker to remember the topics and groups a test used,
// so they can be deleted afterwards.
type tracked struct {
	*Broker
	mu     sync.Mutex
	groups map[string]map[string]bool // topic -> groups
}

func (tb *tracked) note(topic, group string) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if tb.groups[topic] == nil {
		tb.groups[topic] = map[string]bool{}
	}
	if group != "" {
		tb.groups[topic][group] = true
	}
}

func (tb *tracked) Publish(ctx context.Context, msgs ...*broker.Message) error {
	for _, m := range msgs {
		if m != nil && broker.ValidateName("topic", m.Topic) == nil {
			tb.note(m.Topic, "")
		}
	}
	return tb.Broker.Publish(ctx, msgs...)
}

func (tb *tracked) Subscribe(ctx context.Context, topic string, o broker.SubscribeOptions) (broker.Subscription, error) {
	tb.note(topic, o.Group)
	return tb.Broker.Subscribe(ctx, topic, o)
}

func (tb *tracked) EnsureTopic(ctx context.Context, topic string, cfg broker.TopicConfig) error {
	tb.note(topic, "")
	return tb.Broker.EnsureTopic(ctx, topic, cfg)
}

// newTestBroker returns a tracked adapter; after the test (and after the
// adapter is closed) it deletes every exchange and queue the test made.
func newTestBroker(t testing.TB, opts ...Option) *tracked {
	t.Helper()
	url := testURL(t)
	b, err := New(t.Context(), url, append([]Option{WithConnectionName("herald-test")}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	tb := &tracked{Broker: b, groups: map[string]map[string]bool{}}
	t.Cleanup(func() {
		_ = b.Close()
		deleteAll(t, url, tb)
	})
	return tb
}

// deleteAll removes the objects tb created, on a connection of its own.
func deleteAll(t testing.TB, url string, tb *tracked) {
	t.Helper()
	c, err := amqp.Dial(url)
	if err != nil {
		t.Errorf("cleanup: dial: %v", err)
		return
	}
	defer c.Close()
	var queues, exchanges []string
	tb.mu.Lock()
	for topic, groups := range tb.groups {
		exchanges = append(exchanges, exchangeName(topic))
		queues = append(queues, logName(topic))
		for g := range groups {
			gq := groupQueue(topic, g)
			queues = append(queues, gq, dlqName(gq))
			for i := range maxPartitions {
				queues = append(queues, partitionQueue(gq, i))
			}
			exchanges = append(exchanges, hashExchange(gq))
		}
	}
	tb.mu.Unlock()
	tb.delays.Range(func(k, _ any) bool {
		queues = append(queues, k.(string))
		return true
	})
	for _, q := range queues {
		ch, err := c.Channel()
		if err != nil {
			t.Errorf("cleanup: channel: %v", err)
			return
		}
		_, _ = ch.QueueDelete(q, false, false, false) // a missing queue closes the channel
		_ = ch.Close()
	}
	for _, x := range exchanges {
		ch, err := c.Channel()
		if err != nil {
			t.Errorf("cleanup: channel: %v", err)
			return
		}
		_ = ch.ExchangeDelete(x, false, false)
		_ = ch.Close()
	}
}

func TestConformance(t *testing.T) {
	testURL(t)
	brokertest.Run(t, func(t *testing.T) broker.Broker { return newTestBroker(t) }, brokertest.Features{
		Skip: map[string]string{
			brokertest.TestDedup: "RabbitMQ does not deduplicate: the ID travels as the AMQP message-id but nothing checks it " +
				"(deduplication needs the third-party rabbitmq-message-deduplication plugin; Herald's consumer-side idempotency store covers it)",
		},
	})
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, url string
		opts      []Option
		want      string
	}{
		{"bad scheme", "http://127.0.0.1:5672/", nil, "url"},
		{"zero channels", "amqp://guest:guest@127.0.0.1:5672/", []Option{WithPublisherChannels(0)}, "WithPublisherChannels"},
		{"negative limit", "amqp://guest:guest@127.0.0.1:5672/", []Option{WithDeliveryLimit(-1)}, "WithDeliveryLimit"},
		{"unreachable", "amqp://guest:guest@127.0.0.1:1/", []Option{WithDialTimeout(time.Second)}, "unavailable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, err := New(t.Context(), tc.url, tc.opts...)
			if err == nil {
				_ = b.Close()
				t.Fatalf("New(%q) succeeded, want an error mentioning %q", tc.url, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New(%q): %v, want an error mentioning %q", tc.url, err, tc.want)
			}
		})
	}
}
