package telemetry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
)

// Label values Metrics uses when the real one is missing or unbounded.
const (
	// OtherType is the type label of events whose type was first seen after
	// the distinct-type limit was reached (see WithMaxTypes).
	OtherType = "_other"
	// InvalidType is the type label of deliveries that could not be decoded
	// as events (poison messages).
	InvalidType = "_invalid"
)

// Default histogram buckets, in seconds.
var (
	// DefaultHandlerBuckets span 0.5 ms to 30 s: handler runs and publish
	// confirmations.
	DefaultHandlerBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
	// DefaultLatencyBuckets span 1 ms to 1 h: end-to-end and delivery
	// latency include queueing and retry backoff.
	DefaultLatencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}
)

// MetricsOption configures Metrics.
type MetricsOption func(*metricsConfig) error

type metricsConfig struct {
	handlerBuckets []float64
	latencyBuckets []float64
	maxTypes       int
}

// WithHandlerBuckets sets the buckets (seconds, increasing) of
// herald_handler_duration_seconds and herald_publish_duration_seconds.
// Default DefaultHandlerBuckets.
func WithHandlerBuckets(b []float64) MetricsOption {
	return func(c *metricsConfig) error {
		if err := checkBuckets(b); err != nil {
			return fmt.Errorf("WithHandlerBuckets: %w", err)
		}
		c.handlerBuckets = b
		return nil
	}
}

// WithLatencyBuckets sets the buckets (seconds, increasing) of
// herald_end_to_end_latency_seconds and herald_delivery_latency_seconds.
// Default DefaultLatencyBuckets.
func WithLatencyBuckets(b []float64) MetricsOption {
	return func(c *metricsConfig) error {
		if err := checkBuckets(b); err != nil {
			return fmt.Errorf("WithLatencyBuckets: %w", err)
		}
		c.latencyBuckets = b
		return nil
	}
}

// WithMaxTypes bounds the distinct event types used as the type label: the
// first n types seen get their own series, later ones share OtherType.
// Types come from the events, so this keeps a producer of random types
// from growing the metrics without bound. Default 1000.
func WithMaxTypes(n int) MetricsOption {
	return func(c *metricsConfig) error {
		if n < 1 {
			return fmt.Errorf("WithMaxTypes %d: must be at least 1", n)
		}
		c.maxTypes = n
		return nil
	}
}

func checkBuckets(b []float64) error {
	if len(b) == 0 {
		return errors.New("no buckets")
	}
	for i := 1; i < len(b); i++ {
		if b[i] <= b[i-1] {
			return fmt.Errorf("buckets %v: not strictly increasing at index %d", b, i)
		}
	}
	return nil
}

// Metrics records publishing and consuming as Prometheus metrics. It is a
// consumer.Observer (consumer.WithObserver(m)) and has the method of
// herald.PublishHook (herald.Config{Hooks: []herald.PublishHook{m}}).
//
// Series are made on first use and cached, so observing allocates nothing
// after the first event of each (topic, group, type). It is safe for
// concurrent use.
type Metrics struct {
	published    *prometheus.CounterVec
	publishDur   *prometheus.HistogramVec
	consumed     *prometheus.CounterVec
	handlerDur   *prometheus.HistogramVec
	endToEnd     *prometheus.HistogramVec
	delivery     *prometheus.HistogramVec
	redeliveries *prometheus.CounterVec
	inFlight     *prometheus.GaugeVec
	breakers     *breakerCollector

	types     typeLimit
	cons      seriesCache[consKey, *consSeries]
	pub       seriesCache[pubKey, *pubSeries]
	pubOK     prometheus.Observer
	pubErr    prometheus.Observer
	batchPool sync.Pool
}

type consKey struct{ topic, group, typ string }

// consSeries holds every child a delivery of one (topic, group, type)
// touches, so Received and Settled do one lookup each.
type consSeries struct {
	key          consKey
	consumed     [consumer.OutcomeSkipped + 1]prometheus.Counter
	handler      prometheus.Observer
	endToEnd     prometheus.Observer
	delivery     prometheus.Observer
	redeliveries prometheus.Counter
	inFlight     prometheus.Gauge
}

type pubKey struct{ topic, typ string }

type pubSeries struct{ ok, failed prometheus.Counter }

// NewMetrics creates the metrics and registers them with reg (for example
// prometheus.DefaultRegisterer, or a prometheus.NewRegistry served by
// Handler). It fails if reg is nil or already has metrics of these names.
func NewMetrics(reg prometheus.Registerer, opts ...MetricsOption) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("telemetry: NewMetrics: registerer is nil")
	}
	cfg := metricsConfig{handlerBuckets: DefaultHandlerBuckets, latencyBuckets: DefaultLatencyBuckets, maxTypes: 1000}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, fmt.Errorf("telemetry: %w", err)
		}
	}
	m := &Metrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_published_total",
			Help: "Events published by this process, by topic, type and outcome (ok: confirmed by the broker, error: refused or failed).",
		}, []string{"topic", "type", "outcome"}),
		publishDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "herald_publish_duration_seconds",
			Help:    "Time from handing a batch of events to the broker until it confirmed or refused them, by outcome.",
			Buckets: cfg.handlerBuckets,
		}, []string{"outcome"}),
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_consumed_total",
			Help: "Deliveries settled by this process, by topic, group, type and outcome (ack, retry, dlq, dropped, unknown, duplicate).",
		}, []string{"topic", "group", "type", "outcome"}),
		handlerDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "herald_handler_duration_seconds",
			Help:    "Time the handler chain ran for one delivery, whatever its outcome.",
			Buckets: cfg.handlerBuckets,
		}, []string{"topic", "group", "type"}),
		endToEnd: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "herald_end_to_end_latency_seconds",
			Help:    "Time from the event's time (or, without one, when the broker stored it) until a delivery of it was settled other than by a retry.",
			Buckets: cfg.latencyBuckets,
		}, []string{"topic", "group"}),
		delivery: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "herald_delivery_latency_seconds",
			Help:    "Time from when the broker stored a message until this process took a delivery of it (queueing, including redelivery delays).",
			Buckets: cfg.latencyBuckets,
		}, []string{"topic", "group"}),
		redeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_redeliveries_total",
			Help: "Deliveries received that were not the first delivery of their message (attempt > 1).",
		}, []string{"topic", "group"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "herald_handlers_in_flight",
			Help: "Deliveries this process has received and not yet settled.",
		}, []string{"topic", "group"}),
		breakers: newBreakerCollector(),
		types:    typeLimit{max: cfg.maxTypes, seen: map[string]struct{}{}},
	}
	m.pubOK = m.publishDur.WithLabelValues("ok")
	m.pubErr = m.publishDur.WithLabelValues("error")
	m.batchPool.New = func() any {
		b := &publishBatch{m: m}
		b.done = b.after
		return b
	}
	for _, c := range []prometheus.Collector{m.published, m.publishDur, m.consumed, m.handlerDur, m.endToEnd, m.delivery, m.redeliveries, m.inFlight, m.breakers} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("telemetry: register metrics: %w", err)
		}
	}
	return m, nil
}

// Received counts a delivery as in flight and records its delivery
// latency and whether it is a redelivery. It implements consumer.Observer.
func (m *Metrics) Received(msg *consumer.Message) {
	s := m.consSeries(msg)
	s.inFlight.Inc()
	if msg.Attempt > 1 {
		s.redeliveries.Inc()
	}
	if !msg.Stored.IsZero() {
		at := msg.Received()
		if at.IsZero() {
			at = time.Now()
		}
		s.delivery.Observe(nonNegative(at.Sub(msg.Stored)))
	}
}

// Settled counts the delivery's outcome and records how long its handler
// ran and, unless it is to be retried, its end-to-end latency. It
// implements consumer.Observer.
func (m *Metrics) Settled(msg *consumer.Message, o consumer.Outcome, _ error, handled time.Duration) {
	s := m.consSeries(msg)
	s.inFlight.Dec()
	if o >= 0 && int(o) < len(s.consumed) {
		s.consumed[o].Inc()
	} else {
		// An outcome newer than this package: no cached child.
		m.consumed.WithLabelValues(s.key.topic, s.key.group, s.key.typ, o.String()).Inc()
	}
	s.handler.Observe(handled.Seconds())
	if o == consumer.OutcomeRetry {
		return
	}
	from := msg.Stored
	if msg.Event != nil && !msg.Event.Time.IsZero() {
		from = msg.Event.Time
	}
	if !from.IsZero() {
		s.endToEnd.Observe(nonNegative(time.Since(from)))
	}
}

func nonNegative(d time.Duration) float64 {
	if d < 0 {
		// The producer's clock is ahead of ours.
		return 0
	}
	return d.Seconds()
}

func typeOf(msg *consumer.Message) string {
	if msg.Event != nil {
		return msg.Event.Type
	}
	if msg.Handler != "" {
		return msg.Handler
	}
	return InvalidType
}

func (m *Metrics) consSeries(msg *consumer.Message) *consSeries {
	k := consKey{topic: msg.Topic, group: msg.Group, typ: typeOf(msg)}
	if s, ok := m.cons.load(k); ok {
		return s
	}
	k = consKey{topic: validLabel(k.topic), group: validLabel(k.group), typ: validLabel(k.typ)}
	if l := m.types.label(k.typ); l != k.typ {
		k.typ = l
		if s, ok := m.cons.load(k); ok {
			return s
		}
	}
	return m.cons.add(k, func() *consSeries {
		s := &consSeries{
			key:          k,
			handler:      m.handlerDur.WithLabelValues(k.topic, k.group, k.typ),
			endToEnd:     m.endToEnd.WithLabelValues(k.topic, k.group),
			delivery:     m.delivery.WithLabelValues(k.topic, k.group),
			redeliveries: m.redeliveries.WithLabelValues(k.topic, k.group),
			inFlight:     m.inFlight.WithLabelValues(k.topic, k.group),
		}
		for o := range s.consumed {
			s.consumed[o] = m.consumed.WithLabelValues(k.topic, k.group, k.typ, consumer.Outcome(o).String())
		}
		return s
	})
}

// validLabel returns s with invalid UTF-8 replaced: client_golang panics
// on such label values, and event types come from outside.
func validLabel(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

func (m *Metrics) pubSeries(topic, typ string) *pubSeries {
	k := pubKey{topic: topic, typ: typ}
	if s, ok := m.pub.load(k); ok {
		return s
	}
	k = pubKey{topic: validLabel(topic), typ: validLabel(typ)}
	if l := m.types.label(k.typ); l != k.typ {
		k.typ = l
		if s, ok := m.pub.load(k); ok {
			return s
		}
	}
	return m.pub.add(k, func() *pubSeries {
		return &pubSeries{
			ok:     m.published.WithLabelValues(k.topic, k.typ, "ok"),
			failed: m.published.WithLabelValues(k.topic, k.typ, "error"),
		}
	})
}

// publishBatch is the state of one publish between Before and its outcome.
// Batches are pooled so that observing a publish does not allocate; done is
// the method value after, made once per pooled batch.
type publishBatch struct {
	m      *Metrics
	events []*event.Event
	topics []string
	start  time.Time
	done   func(error)
}

// Before starts timing a publish of events to topics; the function it
// returns counts them by outcome. It has the signature of
// herald.PublishHook's method, so a *Metrics is a herald.PublishHook. The
// returned function must be called once.
func (m *Metrics) Before(ctx context.Context, events []*event.Event, topics []string) (context.Context, func(error)) {
	b := m.batchPool.Get().(*publishBatch)
	b.events, b.topics, b.start = events, topics, time.Now()
	return ctx, b.done
}

func (b *publishBatch) after(err error) {
	m := b.m
	d := time.Since(b.start).Seconds()
	if err != nil {
		m.pubErr.Observe(d)
	} else {
		m.pubOK.Observe(d)
	}
	for i, e := range b.events {
		topic := ""
		if i < len(b.topics) {
			topic = b.topics[i]
		}
		s := m.pubSeries(topic, e.Type)
		if err != nil {
			s.failed.Inc()
		} else {
			s.ok.Inc()
		}
	}
	b.events, b.topics = nil, nil
	m.batchPool.Put(b)
}

// BreakerObserver returns a function to use as consumer.BreakerConfig's
// OnChange for group's breaker: it keeps herald_breaker_state{group} at the
// breaker's state. The series starts at closed. A breaker reports no change
// when its open period ends (it becomes half-open only when asked), so the
// gauge shows open until the probe's result; WatchBreaker reads the state
// on every scrape instead.
func (m *Metrics) BreakerObserver(group string) func(from, to consumer.BreakerState) {
	src := m.breakers.source(group)
	return func(_, to consumer.BreakerState) { src.state.Store(int32(to)) }
}

// WatchBreaker reports b's state as herald_breaker_state{group}, read on
// every scrape, for example WatchBreaker(r.Group(), r.Breaker()) for a
// router built with consumer.WithBreaker. A nil b is ignored.
func (m *Metrics) WatchBreaker(group string, b *consumer.Breaker) {
	if b == nil {
		return
	}
	m.breakers.source(group).breaker.Store(b)
}
