package consumer_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/idempotency"
	"github.com/heraldhq/herald/idempotency/natskv"
	"github.com/heraldhq/herald/idempotency/pgstore"
	"github.com/heraldhq/herald/idempotency/redisstore"
	"github.com/heraldhq/herald/internal/testenv"
)

var emb *natsjs.Embedded

func TestMain(m *testing.M) {
	testenv.MainWithNATS(m, natsjs.EmbeddedConfig{}, func(e *natsjs.Embedded) { emb = e })
}

func newBroker(t testing.TB) *natsjs.Broker {
	t.Helper()
	b, err := natsjs.New(context.Background(), natsjs.WithEmbedded(emb), natsjs.WithTopicDefaults(broker.TopicConfig{Partitions: 4}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func unique(prefix string) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// publish publishes n events of type typ to topic; key(i) and mod(i, e)
// shape them. It returns the events.
func publish(t testing.TB, b broker.Publisher, topic, typ string, n int, key func(int) string) []*event.Event {
	t.Helper()
	evs := make([]*event.Event, n)
	msgs := make([]*broker.Message, 0, 500)
	flush := func() {
		if len(msgs) == 0 {
			return
		}
		if err := b.Publish(context.Background(), msgs...); err != nil {
			t.Fatal(err)
		}
		msgs = msgs[:0]
	}
	for i := range n {
		e := event.New("test", typ, []byte(strconv.Itoa(i)))
		if key != nil {
			e.Subject = key(i)
		}
		evs[i] = e
		h := map[string]string{}
		event.NATS.Encode(e, h)
		msgs = append(msgs, &broker.Message{Topic: topic, Route: typ, Key: e.Key(), ID: e.ID, Header: h, Data: e.Data})
		if len(msgs) == cap(msgs) {
			flush()
		}
	}
	flush()
	return evs
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

// dlqReader reads the dead-letter topic of topic.
func dlqReader(t testing.TB, b broker.Subscriber, topic string) broker.Subscription {
	t.Helper()
	s, err := b.Subscribe(context.Background(), consumer.DeadLetterTopic(topic), broker.SubscribeOptions{Group: "dlq-reader", Start: broker.FromFirst})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func nextDLQ(t testing.TB, s broker.Subscription) broker.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("waiting for a dead letter: %v", err)
	}
	_ = d.Ack(ctx)
	return d
}

// TestRetryScheduleAndDeadLetterContext is not parallel: it measures
// delays, and the other tests load the shared server.
func TestRetryScheduleAndDeadLetterContext(t *testing.T) {
	b := newBroker(t)
	topic := unique("retry")
	policy := consumer.RetryPolicy{MaxAttempts: 4, Backoff: consumer.Backoff{Initial: 300 * time.Millisecond, Max: 10 * time.Second, Multiplier: 2, Jitter: 0.1}}
	r, err := consumer.NewRouter(b, b, "billing", []string{topic}, consumer.WithStart(broker.FromFirst), consumer.WithRetry(policy))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var times []time.Time
	var attempts []int
	r.Handle("shop.order.placed.v1", func(ctx context.Context, m *consumer.Message) error {
		mu.Lock()
		times = append(times, time.Now())
		attempts = append(attempts, m.Attempt)
		mu.Unlock()
		return errors.New("payment service unavailable")
	})
	dlq := dlqReader(t, b, topic)
	run(t, r)
	evs := publish(t, b, topic, "shop.order.placed.v1", 1, func(int) string { return "o-1" })
	d := nextDLQ(t, dlq)

	mu.Lock()
	defer mu.Unlock()
	if len(times) != 4 {
		t.Fatalf("handler ran %d times, want 4 (MaxAttempts)", len(times))
	}
	for i, a := range attempts {
		if a != i+1 {
			t.Fatalf("attempts %v, want 1..4", attempts)
		}
	}
	for i := 1; i < len(times); i++ {
		want := policy.Backoff.Base(i)
		got := times[i].Sub(times[i-1])
		lo := time.Duration(float64(want) * 0.85)
		hi := time.Duration(float64(want)*1.5) + 400*time.Millisecond
		if got < lo || got > hi {
			t.Errorf("gap before attempt %d: %v, want %v (between %v and %v)", i+1, got, want, lo, hi)
		}
	}
	m := d.Message()
	ev, err := event.NATS.Decode(m.Header, m.Data)
	if err != nil {
		t.Fatalf("dead letter is not the original event: %v", err)
	}
	if ev.ID != evs[0].ID || string(ev.Data) != "0" || m.Route != "shop.order.placed.v1" {
		t.Fatalf("dead letter carries %+v", ev)
	}
	h := m.Header
	for k, want := range map[string]string{
		consumer.HeaderAttempts:      "4",
		consumer.HeaderHandler:       "shop.order.placed.v1",
		consumer.HeaderGroup:         "billing",
		consumer.HeaderOriginalTopic: topic,
		consumer.HeaderOriginalID:    evs[0].ID,
	} {
		if h[k] != want {
			t.Errorf("header %s = %q, want %q", k, h[k], want)
		}
	}
	if !strings.Contains(h[consumer.HeaderError], "payment service unavailable") || !strings.Contains(h[consumer.HeaderError], "after 4 attempts") {
		t.Errorf("error header %q", h[consumer.HeaderError])
	}
	if seq, err := strconv.ParseUint(h[consumer.HeaderOriginalSequence], 10, 64); err != nil || seq == 0 {
		t.Errorf("original sequence %q", h[consumer.HeaderOriginalSequence])
	}
	first, err1 := time.Parse(time.RFC3339Nano, h[consumer.HeaderFirstFailure])
	last, err2 := time.Parse(time.RFC3339Nano, h[consumer.HeaderLastFailure])
	if err1 != nil || err2 != nil {
		t.Fatalf("failure times %q %q", h[consumer.HeaderFirstFailure], h[consumer.HeaderLastFailure])
	}
	if d := first.Sub(times[0]); d < -50*time.Millisecond || d > 50*time.Millisecond {
		t.Errorf("first failure %v, handler first failed at %v", first, times[0])
	}
	if d := last.Sub(times[3]); d < -50*time.Millisecond || d > 50*time.Millisecond {
		t.Errorf("last failure %v, handler last failed at %v", last, times[3])
	}
}

func TestPanicIsAFailure(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	topic := unique("panic")
	r, err := consumer.NewRouter(b, b, "g", []string{topic}, consumer.WithStart(broker.FromFirst),
		consumer.WithRetry(consumer.RetryPolicy{MaxAttempts: 2, Backoff: consumer.Backoff{Initial: 50 * time.Millisecond, Max: time.Second, Multiplier: 2}}))
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	r.Handle("t.v1", func(ctx context.Context, m *consumer.Message) error {
		calls.Add(1)
		panic("inventory index corrupt")
	})
	dlq := dlqReader(t, b, topic)
	run(t, r)
	publish(t, b, topic, "t.v1", 1, nil)
	d := nextDLQ(t, dlq)
	if calls.Load() != 2 {
		t.Fatalf("handler ran %d times, want 2 (a panic is retried)", calls.Load())
	}
	if e := d.Message().Header[consumer.HeaderError]; !strings.Contains(e, "panicked") || !strings.Contains(e, "inventory index corrupt") {
		t.Fatalf("error header %q does not describe the panic", e)
	}
}

func TestPoisonMessageGoesToDLQAtOnce(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	topic := unique("poison")
	r, err := consumer.NewRouter(b, b, "g", []string{topic}, consumer.WithStart(broker.FromFirst))
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	r.HandleAll(func(ctx context.Context, m *consumer.Message) error { calls.Add(1); return nil })
	dlq := dlqReader(t, b, topic)
	run(t, r)
	// A malformed CloudEvent: attributes missing, a time that is none. (A
	// message without any ce- header is a foreign event, not poison.)
	bad := map[string]string{"ce-specversion": "1.0", "ce-id": "p-1", "ce-time": "yesterday"}
	if err := b.Publish(context.Background(), &broker.Message{Topic: topic, Route: "junk.v1", Header: bad, Data: []byte("\x00garbage")}); err != nil {
		t.Fatal(err)
	}
	d := nextDLQ(t, dlq)
	h := d.Message().Header
	if h[consumer.HeaderAttempts] != "1" || !strings.Contains(h[consumer.HeaderError], "poison message") || !strings.Contains(h[consumer.HeaderError], "ce-time") {
		t.Fatalf("dead letter headers %v", h)
	}
	if string(d.Message().Data) != "\x00garbage" {
		t.Fatalf("payload changed: %q", d.Message().Data)
	}
	if calls.Load() != 0 {
		t.Fatalf("a handler ran for a poison message")
	}
}

// TestForeignMessageIsAnEvent publishes messages as a client that does
// not use Herald would, without CloudEvents headers: the handler of the
// type named in the payload's "event_type" gets them as events, and one
// that fails goes to the dead-letter queue with its derived id.
func TestForeignMessageIsAnEvent(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	topic := unique("foreign")
	r, err := consumer.NewRouter(b, b, "g", []string{topic}, consumer.WithStart(broker.FromFirst))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []*event.Event
	r.Handle("payment.made", func(ctx context.Context, m *consumer.Message) error {
		mu.Lock()
		got = append(got, m.Event)
		mu.Unlock()
		if strings.Contains(string(m.Event.Data), "refused") {
			return consumer.Permanent(errors.New("card refused"))
		}
		return nil
	})
	dlq := dlqReader(t, b, topic)
	run(t, r)
	for _, body := range []string{`{"event_type":"payment.made","amount":5}`, `{"event_type":"payment.made","refused":true}`} {
		if err := b.Publish(context.Background(), &broker.Message{Topic: topic, Route: "raw", Key: "p-1", Data: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	d := nextDLQ(t, dlq)
	h := d.Message().Header
	e, err := event.NATS.Decode(h, d.Message().Data)
	if err != nil || !strings.Contains(h[consumer.HeaderError], "card refused") || h[consumer.HeaderHandler] != "payment.made" {
		t.Fatalf("dead letter %v: %v", h, err)
	}
	eventually(t, 10*time.Second, "both messages handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 2
	})
	mu.Lock()
	defer mu.Unlock()
	for _, g := range got {
		if !strings.HasPrefix(g.ID, "nats:"+topic+"/") || g.Source != "nats:"+topic || g.PartitionKey != "p-1" || g.DataContentType != "application/json" {
			t.Errorf("foreign event %+v", g)
		}
	}
	if e.ID != got[1].ID || e.Type != "payment.made" {
		t.Errorf("dead letter id %q type %q, want %q payment.made", e.ID, e.Type, got[1].ID)
	}
}

func TestUnknownTypes(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	topic := unique("unknown")
	obs := &countingObserver{}
	r, err := consumer.NewRouter(b, b, "acker", []string{topic}, consumer.WithStart(broker.FromFirst), consumer.WithObserver(obs))
	if err != nil {
		t.Fatal(err)
	}
	r.Handle("known.v1", func(context.Context, *consumer.Message) error { return nil })
	run(t, r)
	publish(t, b, topic, "other.v1", 3, nil)
	eventually(t, 10*time.Second, "3 unknown events counted", func() bool { return obs.count(consumer.OutcomeUnknown) == 3 })

	r2, err := consumer.NewRouter(b, b, "dlq-unknown", []string{topic}, consumer.WithStart(broker.FromFirst), consumer.WithUnknownTypes(consumer.UnknownDeadLetter))
	if err != nil {
		t.Fatal(err)
	}
	dlq := dlqReader(t, b, topic)
	run(t, r2)
	d := nextDLQ(t, dlq)
	if !strings.Contains(d.Message().Header[consumer.HeaderError], "no handler for event type") {
		t.Fatalf("error header %q", d.Message().Header[consumer.HeaderError])
	}
}

type countingObserver struct {
	mu  sync.Mutex
	out map[consumer.Outcome]int
}

func (o *countingObserver) Received(*consumer.Message) {}
func (o *countingObserver) Settled(_ *consumer.Message, out consumer.Outcome, _ error, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.out == nil {
		o.out = map[consumer.Outcome]int{}
	}
	o.out[out]++
}
func (o *countingObserver) count(out consumer.Outcome) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.out[out]
}

func TestBreakerOpensAndCloses(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	topic := unique("breaker")
	var mu sync.Mutex
	var changes []string
	r, err := consumer.NewRouter(b, b, "g", []string{topic}, consumer.WithStart(broker.FromFirst),
		consumer.WithConcurrency(1),
		consumer.WithRetry(consumer.RetryPolicy{MaxAttempts: 100, Backoff: consumer.Backoff{Initial: 50 * time.Millisecond, Max: 100 * time.Millisecond, Multiplier: 2}}),
		consumer.WithBreaker(consumer.BreakerConfig{Failures: 3, OpenFor: 500 * time.Millisecond, OnChange: func(from, to consumer.BreakerState) {
			mu.Lock()
			changes = append(changes, from.String()+"->"+to.String())
			mu.Unlock()
		}}))
	if err != nil {
		t.Fatal(err)
	}
	var down atomic.Bool
	down.Store(true)
	var handled sync.Map
	var callsWhileOpen atomic.Int32
	r.Handle("t.v1", func(ctx context.Context, m *consumer.Message) error {
		if r.Breaker().State() == consumer.BreakerOpen {
			callsWhileOpen.Add(1)
		}
		if down.Load() {
			return errors.New("downstream down")
		}
		handled.Store(string(m.Event.Data), true)
		return nil
	})
	run(t, r)
	publish(t, b, topic, "t.v1", 20, func(i int) string { return strconv.Itoa(i) })
	eventually(t, 10*time.Second, "the breaker to open", func() bool { return r.Breaker().State() != consumer.BreakerClosed })
	down.Store(false)
	eventually(t, 20*time.Second, "every event handled after recovery", func() bool {
		n := 0
		handled.Range(func(any, any) bool { n++; return true })
		return n == 20
	})
	if st := r.Breaker().State(); st != consumer.BreakerClosed {
		t.Fatalf("breaker %v after recovery, want closed", st)
	}
	mu.Lock()
	defer mu.Unlock()
	joined := strings.Join(changes, ",")
	if !strings.HasPrefix(joined, "closed->open") || !strings.Contains(joined, "half-open->closed") {
		t.Fatalf("breaker went %s; want closed->open ... half-open->closed", joined)
	}
	if n := callsWhileOpen.Load(); n != 0 {
		t.Fatalf("handler ran %d times while the breaker was open", n)
	}
}

// stores returns one idempotency store of each kind, on real backends:
// memory, JetStream KV (embedded), Redis and PostgreSQL (local services;
// skipped with a reason when unreachable outside CI).
func stores(t *testing.T) map[string]func(t *testing.T) idempotency.Store {
	return map[string]func(t *testing.T) idempotency.Store{
		"memory": func(t *testing.T) idempotency.Store { return idempotency.NewMemory() },
		"natskv": func(t *testing.T) idempotency.Store {
			s, err := natskv.New(t.Context(), newBroker(t).JetStream(), unique("idem"))
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"redis": func(t *testing.T) idempotency.Store {
			testenv.Need(t, "Redis", testenv.RedisAddr)
			rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr})
			t.Cleanup(func() { _ = rdb.Close() })
			s, err := redisstore.New(rdb, redisstore.WithPrefix(unique("herald-test")+":"))
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"postgres": func(t *testing.T) idempotency.Store {
			pool := testenv.PGPool(t, 0)
			table := strings.ReplaceAll(unique("inbox"), "-", "_")
			s, err := pgstore.New(t.Context(), pool, pgstore.WithTable(table), pgstore.WithMigrate())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+table) })
			return s
		},
	}
}

// TestDuplicateHandledOncePerGroup publishes one event three times under
// distinct broker ids (as a producer retrying after the dedup window
// would) and checks that each of two groups handles it once, with every
// idempotency store.
func TestDuplicateHandledOncePerGroup(t *testing.T) {
	t.Parallel()
	for name, newStore := range stores(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := newBroker(t)
			topic := unique("dup")
			store := newStore(t)
			var calls sync.Map
			newRouter := func(group string) *consumer.Router {
				r, err := consumer.NewRouter(b, b, group, []string{topic}, consumer.WithStart(broker.FromFirst),
					consumer.WithMode(consumer.ExactlyOnce), consumer.WithIdempotency(store, time.Minute, time.Hour))
				if err != nil {
					t.Fatal(err)
				}
				r.Handle("t.v1", func(ctx context.Context, m *consumer.Message) error {
					v, _ := calls.LoadOrStore(group+"/"+m.Event.ID, new(atomic.Int32))
					v.(*atomic.Int32).Add(1)
					return nil
				})
				return r
			}
			run(t, newRouter("a"))
			run(t, newRouter("b"))
			e := event.New("test", "t.v1", []byte("x"))
			h := map[string]string{}
			event.NATS.Encode(e, h)
			for i := range 3 {
				if err := b.Publish(context.Background(), &broker.Message{Topic: topic, Route: "t.v1", Key: "k", ID: fmt.Sprintf("%s-%d", e.ID, i), Header: h, Data: e.Data}); err != nil {
					t.Fatal(err)
				}
			}
			publishRange(t, b, topic, 0, 1, 1) // a marker after the duplicates, same key
			eventually(t, 20*time.Second, "both groups to handle the marker", func() bool {
				n := 0
				calls.Range(func(k, _ any) bool { n++; return true })
				return n == 4
			})
			for _, g := range []string{"a", "b"} {
				v, ok := calls.Load(g + "/" + e.ID)
				if !ok || v.(*atomic.Int32).Load() != 1 {
					t.Fatalf("group %s handled the duplicated event %v times, want 1", g, v)
				}
			}
		})
	}
}

func TestMaxDepthGuard(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	topic := unique("depth")
	r, err := consumer.NewRouter(b, b, "g", []string{topic}, consumer.WithStart(broker.FromFirst), consumer.WithMaxDepth(3))
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	r.HandleAll(func(context.Context, *consumer.Message) error { calls.Add(1); return nil })
	dlq := dlqReader(t, b, topic)
	run(t, r)
	e := event.New("test", "storm.v1", nil)
	_ = e.SetExtension(consumer.ExtDepth, "4")
	h := map[string]string{}
	event.NATS.Encode(e, h)
	if err := b.Publish(context.Background(), &broker.Message{Topic: topic, Route: e.Type, ID: e.ID, Header: h}); err != nil {
		t.Fatal(err)
	}
	d := nextDLQ(t, dlq)
	if !strings.Contains(d.Message().Header[consumer.HeaderError], "causation depth 4 exceeds the limit of 3") {
		t.Fatalf("error header %q", d.Message().Header[consumer.HeaderError])
	}
	if calls.Load() != 0 {
		t.Fatal("handler ran for an event over the depth limit")
	}
}

func TestAtMostOnceDoesNotRetry(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	topic := unique("amo")
	r, err := consumer.NewRouter(b, b, "g", []string{topic}, consumer.WithStart(broker.FromFirst), consumer.WithMode(consumer.AtMostOnce))
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	r.HandleAll(func(context.Context, *consumer.Message) error { calls.Add(1); return errors.New("fails") })
	dlq := dlqReader(t, b, topic)
	run(t, r)
	publish(t, b, topic, "t.v1", 1, nil)
	d := nextDLQ(t, dlq)
	if d.Message().Header[consumer.HeaderAttempts] != "1" || calls.Load() != 1 {
		t.Fatalf("at-most-once: %d calls, attempts header %q; want 1 and 1", calls.Load(), d.Message().Header[consumer.HeaderAttempts])
	}
	if _, err := consumer.NewRouter(b, b, "g2", []string{topic}, consumer.WithMode(consumer.ExactlyOnce)); err == nil {
		t.Fatal("ExactlyOnce without a store was accepted")
	}
}

// TestKeyOrderWithConcurrency handles 10k events over 100 keys with 16
// lanes: each key's events arrive in publish order, and keys interleave.
func TestKeyOrderWithConcurrency(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	topic := unique("order")
	const n, keys = 10000, 100
	r, err := consumer.NewRouter(b, b, "g", []string{topic}, consumer.WithStart(broker.FromFirst), consumer.WithConcurrency(16))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	last := map[string]int{}
	var violations []string
	var total atomic.Int32
	var active, maxActive atomic.Int32
	r.HandleAll(func(ctx context.Context, m *consumer.Message) error {
		a := active.Add(1)
		defer active.Add(-1)
		for {
			cur := maxActive.Load()
			if a <= cur || maxActive.CompareAndSwap(cur, a) {
				break
			}
		}
		i, _ := strconv.Atoi(string(m.Event.Data))
		mu.Lock()
		if prev, ok := last[m.Event.Subject]; ok && i <= prev {
			violations = append(violations, fmt.Sprintf("key %s: %d after %d", m.Event.Subject, i, prev))
		}
		last[m.Event.Subject] = i
		mu.Unlock()
		if i%100 == 0 {
			time.Sleep(time.Millisecond) // give other lanes a chance to overlap
		}
		total.Add(1)
		return nil
	})
	publish(t, b, topic, "t.v1", n, func(i int) string { return "k" + strconv.Itoa(i%keys) })
	run(t, r)
	eventually(t, 60*time.Second, "10k events handled", func() bool { return total.Load() >= n })
	mu.Lock()
	defer mu.Unlock()
	if len(violations) > 0 {
		t.Fatalf("%d order violations, first: %s", len(violations), violations[0])
	}
	if maxActive.Load() < 2 {
		t.Fatalf("at most %d handlers ran at once: keys did not run in parallel", maxActive.Load())
	}
}

// TestShutdownLosesNothing stops a router while it is busy, starts another
// in the same group, and checks every event was handled and acknowledged.
func TestShutdownLosesNothing(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	topic := unique("shutdown")
	const n = 2000
	var mu sync.Mutex
	done := map[string]int{}
	handler := func(ctx context.Context, m *consumer.Message) error {
		time.Sleep(100 * time.Microsecond)
		mu.Lock()
		done[m.Event.ID]++
		mu.Unlock()
		return nil
	}
	newRouter := func() *consumer.Router {
		r, err := consumer.NewRouter(b, b, "g", []string{topic}, consumer.WithStart(broker.FromFirst),
			consumer.WithAckWait(3*time.Second), consumer.WithShutdownTimeout(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		r.HandleAll(handler)
		return r
	}
	evs := publish(t, b, topic, "t.v1", n, func(i int) string { return strconv.Itoa(i % 50) })
	stop := run(t, newRouter())
	eventually(t, 20*time.Second, "some events handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(done) > n/5
	})
	stop()
	mu.Lock()
	before := len(done)
	mu.Unlock()
	if before == n {
		t.Fatal("the first router finished everything before it was stopped; the test proves nothing")
	}
	run(t, newRouter())
	eventually(t, 30*time.Second, "every event handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(done) == n
	})
	// Events acked by the first router must not come back.
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for _, e := range evs {
		if done[e.ID] > 1 {
			dups++
		}
	}
	if dups > 0 {
		t.Fatalf("%d events handled twice: graceful shutdown must ack what it handled", dups)
	}
}

// TestKeyOrderAcrossInstances runs three instances of one group (each its
// own connection and router), publishes 10k events over 100 keys, kills one
// instance midway (its connection drops without leaving the group) and
// checks that per-key order held on every instance and across the handover.
func TestKeyOrderAcrossInstances(t *testing.T) {
	t.Parallel()
	keyOrderAcrossInstances(t)
}

// keyOrderAcrossInstances runs three instances of a key-ordered group over
// 10,000 events and 100 keys, crashes one midway (the survivors take its
// partitions and rebalance theirs), and fails t at the first event of a key
// handled out of order.
func keyOrderAcrossInstances(t *testing.T) {
	const n, keys = 10000, 100
	topic := unique("ordered")
	admin := newBroker(t)
	if err := admin.EnsureTopic(context.Background(), topic, broker.TopicConfig{Partitions: 12}); err != nil {
		t.Fatal(err)
	}
	type rec struct {
		inst    int
		key     string
		i       int
		attempt int
		at      time.Time
		dead    bool
	}
	var mu sync.Mutex
	var log []rec
	var dead atomic.Bool
	handled := make([]atomic.Int32, 3)
	brokers := make([]*natsjs.Broker, 3)
	for inst := range 3 {
		b := newBroker(t)
		brokers[inst] = b
		r, err := consumer.NewRouter(b, b, "shipping", []string{topic}, consumer.WithStart(broker.FromFirst),
			consumer.WithAckWait(2*time.Second), consumer.WithConcurrency(8), consumer.WithShutdownTimeout(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		r.HandleAll(func(ctx context.Context, m *consumer.Message) error {
			i, _ := strconv.Atoi(string(m.Event.Data))
			if inst == 2 && dead.Load() {
				mu.Lock()
				log = append(log, rec{inst, m.Event.Subject, i, m.Attempt, time.Now(), true})
				mu.Unlock()
				return errors.New("instance is dead")
			}
			mu.Lock()
			log = append(log, rec{inst, m.Event.Subject, i, m.Attempt, time.Now(), false})
			mu.Unlock()
			handled[inst].Add(1)
			return nil
		})
		run(t, r)
	}
	distinct := func() int {
		mu.Lock()
		defer mu.Unlock()
		seen := map[int]bool{}
		for _, r := range log {
			if !r.dead {
				seen[r.i] = true
			}
		}
		return len(seen)
	}
	// Let the three members find each other before the first events.
	time.Sleep(2 * heartbeatWait)
	go func() {
		for i := 0; i < n; i += 500 {
			publishRange(t, admin, topic, i, min(i+500, n), keys)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	eventually(t, 60*time.Second, "a third of the events handled", func() bool { return distinct() > n/3 })
	if handled[2].Load() == 0 {
		t.Fatal("instance 2 handled nothing before the kill: the partitions were not shared")
	}
	dead.Store(true)
	brokers[2].Conn().Close() // a crash: no unpin, no leave
	eventually(t, 90*time.Second, "all 10k events handled after the kill", func() bool { return distinct() == n })

	mu.Lock()
	defer mu.Unlock()
	for inst := range 2 {
		if handled[inst].Load() == 0 {
			t.Errorf("instance %d handled nothing", inst)
		}
	}
	// Per key: the live instances' records never go backwards (a repeat of
	// the same event is a redelivery), and after the kill they resume at or
	// before the dead instance's last event of that key.
	lastLive := map[string]int{}
	lastDead := map[string]int{}
	killedAt := time.Time{}
	for _, r := range log {
		if r.dead && killedAt.IsZero() {
			killedAt = r.at
		}
	}
	dump := func(key string) string {
		var b strings.Builder
		for _, r := range log {
			if r.key == key {
				fmt.Fprintf(&b, "  inst %d i %d attempt %d at %v dead %v\n", r.inst, r.i, r.attempt, r.at.Sub(killedAt), r.dead)
			}
		}
		return b.String()
	}
	for _, r := range log {
		if r.dead {
			continue
		}
		if r.inst == 2 {
			if prev, ok := lastDead[r.key]; ok && r.i <= prev {
				t.Fatalf("instance 2, key %s: event %d after %d", r.key, r.i, prev)
			}
			lastDead[r.key] = r.i
			continue
		}
		if prev, ok := lastLive[r.key]; ok {
			if r.i < prev {
				t.Fatalf("key %s: event %d handled after %d\n%s", r.key, r.i, prev, dump(r.key))
			}
		} else if d, ok := lastDead[r.key]; ok && r.i > d+keys {
			t.Fatalf("key %s: the next owner started at %d, after the dead owner's last %d: events were skipped\n%s", r.key, r.i, d, dump(r.key))
		}
		lastLive[r.key] = r.i
	}
	t.Logf("handled: instance 0 %d, instance 1 %d, instance 2 (killed) %d", handled[0].Load(), handled[1].Load(), handled[2].Load())
}

const heartbeatWait = time.Second

func publishRange(t testing.TB, b broker.Publisher, topic string, from, to, keys int) {
	msgs := make([]*broker.Message, 0, to-from)
	for i := from; i < to; i++ {
		e := event.New("test", "t.v1", []byte(strconv.Itoa(i)))
		e.Subject = "k" + strconv.Itoa(i%keys)
		h := map[string]string{}
		event.NATS.Encode(e, h)
		msgs = append(msgs, &broker.Message{Topic: topic, Route: e.Type, Key: e.Key(), ID: e.ID, Header: h, Data: e.Data})
	}
	if err := b.Publish(context.Background(), msgs...); err != nil {
		t.Errorf("publish %d..%d: %v", from, to, err)
	}
}

// TestRedriveGroupIsHonoured: an event redriven for one group is handled
// by that group only; the topic's other groups acknowledge it unhandled.
func TestRedriveGroupIsHonoured(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	topic := unique("redrive")
	obs := map[string]*countingObserver{"billing": {}, "audit": {}}
	handled := map[string]*atomic.Int32{"billing": {}, "audit": {}}
	for g := range obs {
		r, err := consumer.NewRouter(b, b, g, []string{topic}, consumer.WithStart(broker.FromFirst), consumer.WithObserver(obs[g]))
		if err != nil {
			t.Fatal(err)
		}
		r.HandleAll(func(context.Context, *consumer.Message) error { handled[g].Add(1); return nil })
		run(t, r)
	}
	e := event.New("test", "t.v1", nil)
	h := map[string]string{consumer.HeaderRedriveGroup: "billing", consumer.HeaderRedrives: "1"}
	event.NATS.Encode(e, h)
	if err := b.Publish(context.Background(), &broker.Message{Topic: topic, Route: e.Type, ID: "redrive:1", Header: h}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "both groups to settle the redriven event", func() bool {
		return obs["billing"].count(consumer.OutcomeAck) == 1 && obs["audit"].count(consumer.OutcomeSkipped) == 1
	})
	if handled["billing"].Load() != 1 || handled["audit"].Load() != 0 {
		t.Fatalf("handled: billing %d, audit %d; want 1 and 0", handled["billing"].Load(), handled["audit"].Load())
	}
}
