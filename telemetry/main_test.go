package telemetry_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testenv"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/consumer"
)

// emb is the embedded NATS server the integration tests share; each test
// makes its own topics and groups.
var emb *natsjs.Embedded

func TestMain(m *testing.M) {
	testenv.MainWithNATS(m, natsjs.EmbeddedConfig{}, func(e *natsjs.Embedded) { emb = e })
}

func newBroker(t testing.TB) *natsjs.Broker {
	t.Helper()
	b, err := natsjs.New(context.Background(), natsjs.WithEmbedded(emb))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// unique returns prefix with a random suffix: every test names its own
// topics and groups.
func unique(prefix string) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// deleteTopics removes the test's topics (and their dead-letter topics)
// from the broker when the test ends.
func deleteTopics(t testing.TB, b *natsjs.Broker, topics ...string) {
	t.Helper()
	t.Cleanup(func() {
		for _, topic := range topics {
			for _, name := range []string{topic, consumer.DeadLetterTopic(topic)} {
				_ = b.JetStream().DeleteStream(context.Background(), natsjs.StreamName(name))
			}
		}
	})
}

// run starts r in the background until the test ends; see
// testenv.RunRouter.
func run(t testing.TB, r *consumer.Router) (stop func()) {
	t.Helper()
	return testenv.RunRouter(t, r)
}

func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, timeout, what, cond)
}
