package telemetry_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/consumer"
)

// emb is the embedded NATS server the integration tests share; each test
// makes its own topics and groups.
var emb *natsjs.Embedded

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "herald-telemetry-test-")
	if err != nil {
		panic(err)
	}
	emb, err = natsjs.RunEmbedded(context.Background(), natsjs.EmbeddedConfig{DataDir: dir})
	if err != nil {
		panic(err)
	}
	code := m.Run()
	emb.Shutdown()
	_ = os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(
			goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
			goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).flushLoop"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
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

// run starts r and returns a function that stops it and waits for Run to
// return; it also runs at cleanup.
func run(t testing.TB, r *consumer.Router) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// eventually polls cond every 10ms until it holds, failing the test after
// timeout with what was awaited.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
