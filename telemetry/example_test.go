package telemetry_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/telemetry"
)

// A service counts what it publishes by putting Metrics in the client's
// hooks (and handles with consumer.WithObserver(m)); the registry is
// served with telemetry.Handler.
func ExampleNewMetrics() {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	m, err := telemetry.NewMetrics(reg)
	if err != nil {
		panic(err)
	}
	c, err := herald.Connect(ctx, herald.Config{URL: "memory://", Source: "orders", DefaultTopic: "orders",
		Hooks: []herald.PublishHook{m}})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	if err := c.Publish(ctx, event.New("", "shop.order.placed.v1", []byte(`{}`))); err != nil {
		panic(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "herald_published_total" {
			continue
		}
		var sb strings.Builder
		_, _ = expfmt.MetricFamilyToText(&sb, mf)
		for _, line := range strings.Split(sb.String(), "\n") {
			if strings.HasPrefix(line, "herald_") {
				fmt.Println(line)
			}
		}
	}
	// Output:
	// herald_published_total{outcome="error",topic="orders",type="shop.order.placed.v1"} 0
	// herald_published_total{outcome="ok",topic="orders",type="shop.order.placed.v1"} 1
}

// Publishing through a traced client makes a producer span and writes its
// W3C context into the event.
func ExampleNewTracing() {
	ctx := context.Background()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(ctx) }()
	tr, err := telemetry.NewTracing(tp, telemetry.WithMessagingSystem("nats"))
	if err != nil {
		panic(err)
	}
	c, err := herald.Connect(ctx, herald.Config{URL: "memory://", Source: "orders", DefaultTopic: "orders",
		Hooks: []herald.PublishHook{tr.PublishHook()}})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	e := event.New("", "shop.order.placed.v1", []byte(`{}`))
	if err := c.Publish(ctx, e); err != nil {
		panic(err)
	}
	s := rec.Ended()[0]
	fmt.Println(s.Name(), s.SpanKind())
	fmt.Println(e.TraceParent == fmt.Sprintf("00-%s-%s-01", s.SpanContext().TraceID(), s.SpanContext().SpanID()))
	// Output:
	// send orders producer
	// true
}
