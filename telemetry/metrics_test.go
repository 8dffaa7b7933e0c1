package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/telemetry"
)

// The hook and observer must fit the SDK's interfaces.
var (
	_ herald.PublishHook = (*telemetry.Metrics)(nil)
	_ herald.PublishHook = telemetry.PublishHook(nil)
	_ consumer.Observer  = (*telemetry.Metrics)(nil)
)

func newMetrics(t testing.TB, opts ...telemetry.MetricsOption) (*telemetry.Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := telemetry.NewMetrics(reg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

// series returns the metric of family name whose labels are exactly
// labels ("k=v" pairs), or nil.
func series(t testing.TB, reg prometheus.Gatherer, name string, labels ...string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var got []string
			for _, lp := range m.GetLabel() {
				got = append(got, lp.GetName()+"="+lp.GetValue())
			}
			sort.Strings(got)
			w := append([]string(nil), labels...)
			sort.Strings(w)
			if strings.Join(got, ",") == strings.Join(w, ",") {
				return m
			}
		}
	}
	return nil
}

func counter(t testing.TB, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	m := series(t, reg, name, labels...)
	if m == nil {
		return 0
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

func histCount(t testing.TB, reg prometheus.Gatherer, name string, labels ...string) (uint64, float64) {
	t.Helper()
	m := series(t, reg, name, labels...)
	if m == nil || m.Histogram == nil {
		return 0, 0
	}
	return m.Histogram.GetSampleCount(), m.Histogram.GetSampleSum()
}

func msg(topic, group, typ string, attempt int, age time.Duration) *consumer.Message {
	e := event.New("test", typ, []byte("{}"))
	e.Time = time.Now().Add(-age)
	return &consumer.Message{Event: e, Topic: topic, Group: group, Handler: typ, Attempt: attempt, Stored: time.Now().Add(-age / 2)}
}

func TestMetricsObserver(t *testing.T) {
	t.Parallel()
	m, reg := newMetrics(t)
	outcomes := []consumer.Outcome{consumer.OutcomeAck, consumer.OutcomeAck, consumer.OutcomeRetry, consumer.OutcomeDeadLetter, consumer.OutcomeDrop, consumer.OutcomeDuplicate}
	for i, o := range outcomes {
		d := msg("orders", "billing", "order.placed", i+1, 2*time.Second)
		m.Received(d)
		if got := counter(t, reg, "herald_handlers_in_flight", "topic=orders", "group=billing"); got != 1 {
			t.Fatalf("in flight after Received: %v, want 1", got)
		}
		m.Settled(d, o, nil, 3*time.Millisecond)
	}
	l := []string{"topic=orders", "group=billing", "type=order.placed"}
	for o, want := range map[string]float64{"ack": 2, "retry": 1, "dlq": 1, "dropped": 1, "duplicate": 1, "unknown": 0} {
		if got := counter(t, reg, "herald_consumed_total", append(l, "outcome="+o)...); got != want {
			t.Errorf("consumed{outcome=%s} = %v, want %v", o, got, want)
		}
	}
	if s := series(t, reg, "herald_consumed_total", append(l, "outcome=unknown")...); s == nil {
		t.Error("consumed{outcome=unknown} has no series: every outcome should start at 0")
	}
	if n, sum := histCount(t, reg, "herald_handler_duration_seconds", l...); n != 6 || sum < 0.017 || sum > 0.019 {
		t.Errorf("handler duration count %d sum %v, want 6 and 0.018", n, sum)
	}
	// Retries are not handled yet: 5 of 6 count towards end-to-end latency,
	// each at least the 2s since the event's time.
	if n, sum := histCount(t, reg, "herald_end_to_end_latency_seconds", "topic=orders", "group=billing"); n != 5 || sum < 10 {
		t.Errorf("end-to-end count %d sum %v, want 5 and >= 10", n, sum)
	}
	if n, sum := histCount(t, reg, "herald_delivery_latency_seconds", "topic=orders", "group=billing"); n != 6 || sum < 6 {
		t.Errorf("delivery latency count %d sum %v, want 6 and >= 6 (stored 1s ago each)", n, sum)
	}
	if got := counter(t, reg, "herald_redeliveries_total", "topic=orders", "group=billing"); got != 5 {
		t.Errorf("redeliveries = %v, want 5 (attempts 2..6)", got)
	}
	if got := counter(t, reg, "herald_handlers_in_flight", "topic=orders", "group=billing"); got != 0 {
		t.Errorf("in flight after settling all = %v, want 0", got)
	}
}

func TestMetricsPoisonAndBadLabels(t *testing.T) {
	t.Parallel()
	m, reg := newMetrics(t)
	poison := &consumer.Message{Topic: "orders", Group: "g", Attempt: 1, DecodeErr: errors.New("bad header"), Stored: time.Now()}
	m.Received(poison)
	m.Settled(poison, consumer.OutcomeDeadLetter, poison.DecodeErr, time.Millisecond)
	if got := counter(t, reg, "herald_consumed_total", "topic=orders", "group=g", "type="+telemetry.InvalidType, "outcome=dlq"); got != 1 {
		t.Errorf("poison message counted %v times under type %s, want 1", got, telemetry.InvalidType)
	}
	// A type that is not UTF-8 must not panic the handler goroutine.
	bad := msg("orders", "g", "bad\xff", 1, 0)
	m.Received(bad)
	m.Settled(bad, consumer.OutcomeAck, nil, time.Millisecond)
	if got := counter(t, reg, "herald_consumed_total", "topic=orders", "group=g", "type=bad\uFFFD", "outcome=ack"); got != 1 {
		t.Errorf("invalid UTF-8 type counted %v times under its repaired name, want 1", got)
	}
	// Nor a clock skewed producer (event time in the future).
	future := msg("orders", "g", "t", 1, -time.Hour)
	m.Received(future)
	m.Settled(future, consumer.OutcomeAck, nil, 0)
	if n, _ := histCount(t, reg, "herald_end_to_end_latency_seconds", "topic=orders", "group=g"); n != 3 {
		t.Errorf("end-to-end observations %d, want 3", n)
	}
}

func TestMetricsMaxTypes(t *testing.T) {
	t.Parallel()
	m, reg := newMetrics(t, telemetry.WithMaxTypes(2))
	for _, typ := range []string{"a", "b", "c", "d", "a"} {
		d := msg("t", "g", typ, 1, 0)
		m.Received(d)
		m.Settled(d, consumer.OutcomeAck, nil, 0)
		_, done := m.Before(context.Background(), []*event.Event{d.Event}, []string{"t"})
		done(nil)
	}
	for typ, want := range map[string]float64{"a": 2, "b": 1, telemetry.OtherType: 2} {
		if got := counter(t, reg, "herald_consumed_total", "topic=t", "group=g", "type="+typ, "outcome=ack"); got != want {
			t.Errorf("consumed{type=%s} = %v, want %v", typ, got, want)
		}
		if got := counter(t, reg, "herald_published_total", "topic=t", "type="+typ, "outcome=ok"); got != want {
			t.Errorf("published{type=%s} = %v, want %v", typ, got, want)
		}
	}
	for _, typ := range []string{"c", "d"} {
		if s := series(t, reg, "herald_consumed_total", "topic=t", "group=g", "type="+typ, "outcome=ack"); s != nil {
			t.Errorf("type %s past the limit has its own series", typ)
		}
	}
}

func TestMetricsPublishHook(t *testing.T) {
	t.Parallel()
	m, reg := newMetrics(t)
	a := event.New("s", "order.placed", nil)
	b := event.New("s", "order.paid", nil)
	ctx := context.Background()
	out, done := m.Before(ctx, []*event.Event{a, b, a}, []string{"orders", "orders", "audit"})
	if out != ctx {
		t.Error("Before replaced the context")
	}
	done(nil)
	_, done = m.Before(ctx, []*event.Event{b}, []string{"orders"})
	done(errors.New("broker unavailable"))
	for _, c := range []struct {
		topic, typ, outcome string
		want                float64
	}{
		{"orders", "order.placed", "ok", 1},
		{"orders", "order.paid", "ok", 1},
		{"audit", "order.placed", "ok", 1},
		{"orders", "order.paid", "error", 1},
		{"orders", "order.placed", "error", 0},
	} {
		if got := counter(t, reg, "herald_published_total", "topic="+c.topic, "type="+c.typ, "outcome="+c.outcome); got != c.want {
			t.Errorf("published{%s,%s,%s} = %v, want %v", c.topic, c.typ, c.outcome, got, c.want)
		}
	}
	if n, _ := histCount(t, reg, "herald_publish_duration_seconds", "outcome=ok"); n != 1 {
		t.Errorf("publish duration{ok} count %d, want 1 (one batch)", n)
	}
	if n, _ := histCount(t, reg, "herald_publish_duration_seconds", "outcome=error"); n != 1 {
		t.Errorf("publish duration{error} count %d, want 1", n)
	}
}

func TestMetricsConcurrent(t *testing.T) {
	t.Parallel()
	m, reg := newMetrics(t)
	const workers, per = 8, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				d := msg("t", "g", fmt.Sprintf("type.%d", (w+i)%5), 1, 0)
				m.Received(d)
				m.Settled(d, consumer.OutcomeAck, nil, 0)
				_, done := m.Before(context.Background(), []*event.Event{d.Event}, []string{"t"})
				done(nil)
			}
		})
	}
	wg.Wait()
	var consumed, published float64
	for i := range 5 {
		typ := fmt.Sprintf("type=type.%d", i)
		consumed += counter(t, reg, "herald_consumed_total", "topic=t", "group=g", typ, "outcome=ack")
		published += counter(t, reg, "herald_published_total", "topic=t", typ, "outcome=ok")
	}
	if consumed != workers*per || published != workers*per {
		t.Errorf("consumed %v published %v, want %d each", consumed, published, workers*per)
	}
}

func TestNewMetricsErrors(t *testing.T) {
	t.Parallel()
	if _, err := telemetry.NewMetrics(nil); err == nil {
		t.Error("nil registerer accepted")
	}
	reg := prometheus.NewRegistry()
	if _, err := telemetry.NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := telemetry.NewMetrics(reg); err == nil {
		t.Error("second registration with the same registry accepted")
	}
	for name, opt := range map[string]telemetry.MetricsOption{
		"empty buckets":      telemetry.WithHandlerBuckets(nil),
		"decreasing buckets": telemetry.WithLatencyBuckets([]float64{1, 0.5}),
		"zero types":         telemetry.WithMaxTypes(0),
	} {
		if _, err := telemetry.NewMetrics(prometheus.NewRegistry(), opt); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	m, reg := newMetrics(t, telemetry.WithHandlerBuckets([]float64{0.1, 1}))
	d := msg("t", "g", "x", 1, 0)
	m.Received(d)
	m.Settled(d, consumer.OutcomeAck, nil, 500*time.Millisecond)
	s := series(t, reg, "herald_handler_duration_seconds", "topic=t", "group=g", "type=x")
	if s == nil || len(s.Histogram.GetBucket()) != 2 {
		t.Fatalf("custom buckets not used: %v", s)
	}
}

func TestBreakerState(t *testing.T) {
	t.Parallel()
	m, reg := newMetrics(t)
	state := func(group string) float64 { return counter(t, reg, "herald_breaker_state", "group="+group) }

	onChange := m.BreakerObserver("pushed")
	if s := series(t, reg, "herald_breaker_state", "group=pushed"); s == nil || state("pushed") != telemetry.BreakerClosedValue {
		t.Fatalf("breaker series should start closed, got %v", s)
	}
	onChange(consumer.BreakerClosed, consumer.BreakerOpen)
	if got := state("pushed"); got != telemetry.BreakerOpenValue {
		t.Errorf("after open: %v, want %v", got, telemetry.BreakerOpenValue)
	}
	onChange(consumer.BreakerOpen, consumer.BreakerHalfOpen)
	if got := state("pushed"); got != telemetry.BreakerHalfOpenValue {
		t.Errorf("after half-open: %v, want %v", got, telemetry.BreakerHalfOpenValue)
	}

	// A real breaker: one failure opens it, the open period ends (half-open,
	// which OnChange never reports), a successful probe closes it.
	b := consumer.NewBreaker(consumer.BreakerConfig{Failures: 1, OpenFor: 50 * time.Millisecond, OnChange: m.BreakerObserver("watched")})
	m.WatchBreaker("watched", b)
	m.WatchBreaker("nil", nil)
	fail := b.Middleware()(func(context.Context, *consumer.Message) error { return errors.New("down") })
	ok := b.Middleware()(func(context.Context, *consumer.Message) error { return nil })
	_ = fail(context.Background(), &consumer.Message{})
	if got := state("watched"); got != telemetry.BreakerOpenValue {
		t.Fatalf("after a failure: %v, want open", got)
	}
	eventually(t, 5*time.Second, "the watched breaker to report half-open", func() bool {
		return state("watched") == telemetry.BreakerHalfOpenValue
	})
	if err := ok(context.Background(), &consumer.Message{}); err != nil {
		t.Fatalf("probe: %v", err)
	}
	if got := state("watched"); got != telemetry.BreakerClosedValue {
		t.Errorf("after a good probe: %v, want closed", got)
	}
	if s := series(t, reg, "herald_breaker_state", "group=nil"); s != nil {
		t.Error("WatchBreaker(nil) made a series")
	}
}

// TestMetricsWithRouter runs the metrics on a real router and client
// against the embedded broker: one event acks at once, one fails once and
// then acks, one fails permanently.
func TestMetricsWithRouter(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := newBroker(t)
	topic, group := unique("metrics"), unique("g")
	deleteTopics(t, b, topic)
	m, reg := newMetrics(t)
	c, err := herald.Connect(ctx, herald.Config{Broker: b, Source: "test", DefaultTopic: topic, Hooks: []herald.PublishHook{m}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Router(group, []string{topic}, consumer.WithObserver(m), consumer.WithStart(broker.FromFirst),
		consumer.WithRetry(consumer.RetryPolicy{MaxAttempts: 3, Backoff: consumer.Backoff{Initial: 10 * time.Millisecond, Max: 10 * time.Millisecond, Multiplier: 1}}))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	failed := map[string]bool{}
	r.Handle("t.ok", func(context.Context, *consumer.Message) error { return nil })
	r.Handle("t.flaky", func(_ context.Context, d *consumer.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if !failed[d.Event.ID] {
			failed[d.Event.ID] = true
			return errors.New("first attempt fails")
		}
		return nil
	})
	r.Handle("t.bad", func(context.Context, *consumer.Message) error { return consumer.Permanent(errors.New("cannot handle")) })
	run(t, r)
	for _, typ := range []string{"t.ok", "t.flaky", "t.bad"} {
		if err := c.Publish(ctx, event.New("", typ, []byte("{}"))); err != nil {
			t.Fatal(err)
		}
	}
	l := func(typ, outcome string) []string {
		return []string{"topic=" + topic, "group=" + group, "type=" + typ, "outcome=" + outcome}
	}
	eventually(t, 10*time.Second, "every event to be settled", func() bool {
		return counter(t, reg, "herald_consumed_total", l("t.ok", "ack")...) == 1 &&
			counter(t, reg, "herald_consumed_total", l("t.flaky", "ack")...) == 1 &&
			counter(t, reg, "herald_consumed_total", l("t.bad", "dlq")...) == 1
	})
	if got := counter(t, reg, "herald_consumed_total", l("t.flaky", "retry")...); got != 1 {
		t.Errorf("flaky retries = %v, want 1", got)
	}
	if got := counter(t, reg, "herald_redeliveries_total", "topic="+topic, "group="+group); got != 1 {
		t.Errorf("redeliveries = %v, want 1", got)
	}
	for _, typ := range []string{"t.ok", "t.flaky", "t.bad"} {
		if got := counter(t, reg, "herald_published_total", "topic="+topic, "type="+typ, "outcome=ok"); got != 1 {
			t.Errorf("published{%s} = %v, want 1", typ, got)
		}
	}
	// The dead letter was published by the router's own publisher, not the
	// client, so it is not counted as published.
	if got := counter(t, reg, "herald_published_total", "topic="+consumer.DeadLetterTopic(topic), "type=t.bad", "outcome=ok"); got != 0 {
		t.Errorf("dead letter counted as published: %v", got)
	}
	if n, _ := histCount(t, reg, "herald_end_to_end_latency_seconds", "topic="+topic, "group="+group); n != 3 {
		t.Errorf("end-to-end observations %d, want 3 (retries excluded)", n)
	}
}
