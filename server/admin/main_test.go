package admin

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testenv"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
)

var emb *natsjs.Embedded

func TestMain(m *testing.M) {
	testenv.MainWithNATS(m, natsjs.EmbeddedConfig{}, func(e *natsjs.Embedded) { emb = e })
}

// env is a broker and a service over the package's embedded server.
type env struct {
	b   *natsjs.Broker
	svc *Service
}

func newEnv(t testing.TB, opts ...natsjs.Option) *env {
	t.Helper()
	b, err := natsjs.New(context.Background(), append([]natsjs.Option{natsjs.WithEmbedded(emb),
		natsjs.WithTopicDefaults(broker.TopicConfig{Partitions: 4})}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	svc, err := New(b)
	if err != nil {
		t.Fatal(err)
	}
	return &env{b: b, svc: svc}
}

// dropTopic deletes topic's stream (and its dead-letter topic's) at cleanup.
func (e *env) dropTopic(t testing.TB, topic string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, name := range []string{natsjs.StreamName(topic), natsjs.StreamName(topic + ".dlq")} {
			_ = e.b.JetStream().DeleteStream(ctx, name)
		}
	})
}

// publishEvents publishes n CloudEvents of type typ to topic, subjects
// "s-<i%keys>", and returns them.
func (e *env) publishEvents(t testing.TB, topic, typ string, n, keys int) []*event.Event {
	t.Helper()
	evs := make([]*event.Event, n)
	msgs := make([]*broker.Message, n)
	for i := range evs {
		ev := event.New("test", typ, []byte(fmt.Sprintf(`{"n":%d}`, i)))
		ev.Subject = "s-" + strconv.Itoa(i%keys)
		ev.DataContentType = "application/json"
		h := map[string]string{}
		event.NATS.Encode(ev, h)
		evs[i] = ev
		msgs[i] = &broker.Message{Topic: topic, Route: typ, Key: ev.Subject, ID: ev.ID, Header: h, Data: ev.Data}
	}
	if err := e.b.Publish(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
	return evs
}

// eventually polls cond every 20ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last state: %s", timeout, what, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// recorder runs a router for group on topic and records the topic
// sequences it handles, in order.
type recorder struct {
	mu   sync.Mutex
	seqs []uint64
	stop context.CancelFunc
	wg   sync.WaitGroup
}

func (e *env) runGroup(t testing.TB, topic, group string, opts ...consumer.Option) *recorder {
	t.Helper()
	r, err := consumer.NewRouter(e.b, e.b, group, []string{topic}, append([]consumer.Option{consumer.WithShutdownTimeout(5 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	r.HandleAll(func(ctx context.Context, m *consumer.Message) error {
		rec.mu.Lock()
		rec.seqs = append(rec.seqs, m.Sequence)
		rec.mu.Unlock()
		return nil
	})
	ctx, stop := context.WithCancel(context.Background())
	rec.stop = stop
	rec.wg.Go(func() {
		if err := r.Run(ctx); err != nil {
			t.Errorf("router %s: %v", group, err)
		}
	})
	t.Cleanup(rec.close)
	return rec
}

func (r *recorder) close() {
	r.stop()
	r.wg.Wait()
}

func (r *recorder) handled() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64(nil), r.seqs...)
}

func (r *recorder) waitCount(t testing.TB, n int) []uint64 {
	t.Helper()
	var got []uint64
	eventually(t, 30*time.Second, fmt.Sprintf("%d events handled", n), func() (bool, string) {
		got = r.handled()
		return len(got) >= n, fmt.Sprintf("%d handled: %v", len(got), got)
	})
	return got
}
