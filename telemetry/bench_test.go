package telemetry_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/telemetry"
)

// baseline records the same series as Metrics with plain client_golang
// vectors, looking the children up by label values on every call: what an
// observer without the series cache does.
type baseline struct {
	consumed, published, redeliveries  *prometheus.CounterVec
	handler, e2e, delivery, publishDur *prometheus.HistogramVec
	inFlight                           *prometheus.GaugeVec
}

func newBaseline() *baseline {
	return &baseline{
		consumed:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c"}, []string{"topic", "group", "type", "outcome"}),
		published:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "p"}, []string{"topic", "type", "outcome"}),
		redeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "r"}, []string{"topic", "group"}),
		handler:      prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "h", Buckets: telemetry.DefaultHandlerBuckets}, []string{"topic", "group", "type"}),
		e2e:          prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "e", Buckets: telemetry.DefaultLatencyBuckets}, []string{"topic", "group"}),
		delivery:     prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "l", Buckets: telemetry.DefaultLatencyBuckets}, []string{"topic", "group"}),
		inFlight:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "i"}, []string{"topic", "group"}),
		publishDur:   prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "d", Buckets: telemetry.DefaultHandlerBuckets}, []string{"outcome"}),
	}
}

func (b *baseline) observe(m *consumer.Message, o consumer.Outcome, d time.Duration) {
	b.inFlight.WithLabelValues(m.Topic, m.Group).Inc()
	if m.Attempt > 1 {
		b.redeliveries.WithLabelValues(m.Topic, m.Group).Inc()
	}
	b.delivery.WithLabelValues(m.Topic, m.Group).Observe(time.Since(m.Stored).Seconds())
	b.inFlight.WithLabelValues(m.Topic, m.Group).Dec()
	b.consumed.WithLabelValues(m.Topic, m.Group, m.Event.Type, o.String()).Inc()
	b.handler.WithLabelValues(m.Topic, m.Group, m.Event.Type).Observe(d.Seconds())
	b.e2e.WithLabelValues(m.Topic, m.Group).Observe(time.Since(m.Event.Time).Seconds())
}

func (b *baseline) publish(events []*event.Event, topics []string) {
	start := time.Now()
	for i, e := range events {
		b.published.WithLabelValues(topics[i], e.Type, "ok").Inc()
	}
	b.publishDur.WithLabelValues("ok").Observe(time.Since(start).Seconds())
}

func benchMessage() *consumer.Message {
	e := event.New("shop", "shop.order.placed.v1", nil)
	return &consumer.Message{Event: e, Topic: "orders", Group: "billing", Attempt: 1, Stored: e.Time}
}

// BenchmarkObserver is the cost Metrics adds to each handled event:
// Received + Settled.
func BenchmarkObserver(b *testing.B) {
	m, err := telemetry.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	msg := benchMessage()
	b.Run("raw-client_golang", func(b *testing.B) {
		base := newBaseline()
		b.ReportAllocs()
		for b.Loop() {
			base.observe(msg, consumer.OutcomeAck, time.Millisecond)
		}
	})
	b.Run("metrics", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.Received(msg)
			m.Settled(msg, consumer.OutcomeAck, nil, time.Millisecond)
		}
	})
	b.Run("metrics-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			msg := benchMessage()
			for pb.Next() {
				m.Received(msg)
				m.Settled(msg, consumer.OutcomeAck, nil, time.Millisecond)
			}
		})
	})
}

// BenchmarkPublishHook is the cost Metrics adds to publishing one event.
func BenchmarkPublishHook(b *testing.B) {
	m, err := telemetry.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	events := []*event.Event{event.New("shop", "shop.order.placed.v1", nil)}
	topics := []string{"orders"}
	ctx := context.Background()
	b.Run("raw-client_golang", func(b *testing.B) {
		base := newBaseline()
		b.ReportAllocs()
		for b.Loop() {
			base.publish(events, topics)
		}
	})
	b.Run("metrics", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, done := m.Before(ctx, events, topics)
			done(nil)
		}
	})
	b.Run("metrics-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_, done := m.Before(ctx, events, topics)
				done(nil)
			}
		})
	})
}

// BenchmarkTracing is the cost of one event's two spans: the producer
// hook and the consumer middleware around an empty handler. "raw-otel" is
// the floor: the same two spans started and ended with the OpenTelemetry
// API, with neither attributes nor propagation. "noop" is Herald's tracing
// with a no-op provider; "sdk" with the SDK sampling every span and
// exporting none.
func BenchmarkTracing(b *testing.B) {
	sdk := sdktrace.NewTracerProvider()
	b.Cleanup(func() { _ = sdk.Shutdown(context.Background()) })
	ctx := context.Background()
	handler := func(context.Context, *consumer.Message) error { return nil }
	b.Run("raw-otel-sdk", func(b *testing.B) {
		tracer := sdk.Tracer("bench")
		msg := benchMessage()
		b.ReportAllocs()
		for b.Loop() {
			pctx, p := tracer.Start(ctx, "send orders", trace.WithSpanKind(trace.SpanKindProducer))
			p.End()
			cctx, c := tracer.Start(pctx, "process orders", trace.WithSpanKind(trace.SpanKindConsumer))
			_ = handler(cctx, msg)
			c.End()
		}
	})
	for _, tc := range []struct {
		name string
		tp   trace.TracerProvider
	}{{"noop", noop.NewTracerProvider()}, {"sdk", sdk}} {
		b.Run(tc.name, func(b *testing.B) {
			tr, err := telemetry.NewTracing(tc.tp)
			if err != nil {
				b.Fatal(err)
			}
			hook := tr.PublishHook()
			h := tr.Middleware()(handler)
			msg := benchMessage()
			events, topics := []*event.Event{msg.Event}, []string{"orders"}
			b.ReportAllocs()
			for b.Loop() {
				_, done := hook.Before(ctx, events, topics)
				done(nil)
				_ = h(ctx, msg)
			}
		})
	}
}
