package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/telemetry"
)

func newTracing(t testing.TB, opts ...telemetry.TracingOption) (*telemetry.Tracing, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tr, err := telemetry.NewTracing(tp, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return tr, rec
}

func attr(s sdktrace.ReadOnlySpan, key attribute.Key) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// wantAttrs checks string and int attributes of s.
func wantAttrs(t testing.TB, s sdktrace.ReadOnlySpan, want map[attribute.Key]any) {
	t.Helper()
	for k, w := range want {
		v, ok := attr(s, k)
		if !ok {
			t.Errorf("span %q lacks %s", s.Name(), k)
			continue
		}
		if got := v.AsInterface(); fmt.Sprint(got) != fmt.Sprint(w) {
			t.Errorf("span %q: %s = %v, want %v", s.Name(), k, got, w)
		}
	}
}

var w3c = regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-0[0-9a-f]$`)

// TestTraceTree is the acceptance test: an event published from outside,
// handled by a consumer that publishes a follow-up event, handled in turn,
// gives one trace producer(A) -> consumer(A) -> producer(B) -> consumer(B)
// carrying one correlation id, with W3C traceparent headers on the wire.
func TestTraceTree(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := newBroker(t)
	topicA, topicB, group := unique("trace-a"), unique("trace-b"), unique("g")
	deleteTopics(t, b, topicA, topicB)
	tr, rec := newTracing(t)

	c, err := herald.Connect(ctx, herald.Config{
		Broker: b,
		Source: "shop",
		Topics: map[string]string{"order.placed": topicA, "order.paid": topicB},
		Hooks:  []herald.PublishHook{tr.PublishHook()},
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Router(group, []string{topicA, topicB},
		consumer.WithMiddleware(tr.Middleware()), consumer.WithStart(broker.FromFirst))
	if err != nil {
		t.Fatal(err)
	}
	type seen struct {
		ev     *event.Event
		header string
	}
	gotA, gotB := make(chan seen, 1), make(chan seen, 1)
	r.Handle("order.placed", func(ctx context.Context, m *consumer.Message) error {
		if err := c.Publish(ctx, event.New("", "order.paid", []byte(`{"id":"o-1"}`))); err != nil {
			return err
		}
		gotA <- seen{m.Event, m.Raw.Header["ce-traceparent"]}
		return nil
	})
	r.Handle("order.paid", func(_ context.Context, m *consumer.Message) error {
		gotB <- seen{m.Event, m.Raw.Header["ce-traceparent"]}
		return nil
	})
	run(t, r)

	a := event.New("", "order.placed", []byte(`{"id":"o-1"}`))
	a.CorrelationID = "corr-" + unique("o")
	if err := c.Publish(ctx, a); err != nil {
		t.Fatal(err)
	}
	var sa, sb seen
	for _, w := range []struct {
		ch  chan seen
		dst *seen
	}{{gotA, &sa}, {gotB, &sb}} {
		select {
		case *w.dst = <-w.ch:
		case <-time.After(10 * time.Second):
			t.Fatal("timed out waiting for both events to be handled")
		}
	}
	eventually(t, 5*time.Second, "four ended spans", func() bool { return len(rec.Ended()) >= 4 })
	spans := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		if _, dup := spans[s.Name()]; dup {
			t.Errorf("two spans named %q", s.Name())
		}
		spans[s.Name()] = s
	}
	if len(spans) != 4 {
		t.Fatalf("got spans %v, want 4", spans)
	}
	chain := []struct {
		name string
		kind trace.SpanKind
	}{
		{"send " + topicA, trace.SpanKindProducer},
		{"process " + topicA, trace.SpanKindConsumer},
		{"send " + topicB, trace.SpanKindProducer},
		{"process " + topicB, trace.SpanKindConsumer},
	}
	var prev sdktrace.ReadOnlySpan
	for _, want := range chain {
		s, ok := spans[want.name]
		if !ok {
			t.Fatalf("no span %q among %v", want.name, spans)
		}
		if s.SpanKind() != want.kind {
			t.Errorf("%s: kind %v, want %v", want.name, s.SpanKind(), want.kind)
		}
		if prev == nil {
			if s.Parent().IsValid() {
				t.Errorf("%s: has parent %v, want a root span", want.name, s.Parent())
			}
		} else {
			if s.SpanContext().TraceID() != prev.SpanContext().TraceID() {
				t.Errorf("%s: trace %s, want %s", want.name, s.SpanContext().TraceID(), prev.SpanContext().TraceID())
			}
			if s.Parent().SpanID() != prev.SpanContext().SpanID() {
				t.Errorf("%s: parent %s, want %s (%s)", want.name, s.Parent().SpanID(), prev.SpanContext().SpanID(), prev.Name())
			}
		}
		if v, _ := attr(s, telemetry.AttrCorrelationID); v.AsString() != a.CorrelationID {
			t.Errorf("%s: correlation id %q, want %q", want.name, v.AsString(), a.CorrelationID)
		}
		if s.Status().Code == codes.Error {
			t.Errorf("%s: error status %v", want.name, s.Status())
		}
		prev = s
	}

	wantAttrs(t, spans["send "+topicA], map[attribute.Key]any{
		"messaging.system": "nats", "messaging.operation.type": "send", "messaging.operation.name": "send",
		"messaging.destination.name": topicA, "messaging.message.id": a.ID,
		"cloudevents.event_id": a.ID, "cloudevents.event_type": "order.placed", "cloudevents.event_source": "shop",
	})
	wantAttrs(t, spans["process "+topicB], map[attribute.Key]any{
		"messaging.system": "nats", "messaging.operation.type": "process", "messaging.destination.name": topicB,
		"messaging.consumer.group.name": group, "messaging.message.id": sb.ev.ID, telemetry.AttrAttempt: 1,
		"cloudevents.event_type": "order.paid", telemetry.AttrCausationID: a.ID,
	})

	// What travelled is W3C trace context naming each event's producer span.
	for _, w := range []struct {
		s        seen
		producer string
	}{{sa, "send " + topicA}, {sb, "send " + topicB}} {
		if w.s.header != w.s.ev.TraceParent || !w3c.MatchString(w.s.header) {
			t.Errorf("ce-traceparent header %q (event %q) is not a W3C traceparent", w.s.header, w.s.ev.TraceParent)
		}
		sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(),
			propagation.MapCarrier{"traceparent": w.s.header}))
		want := spans[w.producer].SpanContext()
		if !sc.IsValid() || sc.TraceID() != want.TraceID() || sc.SpanID() != want.SpanID() || !sc.IsSampled() {
			t.Errorf("traceparent %q reads as %v, want the span of %s %v", w.s.header, sc, w.producer, want)
		}
	}
	if sb.ev.CorrelationID != a.CorrelationID || sb.ev.CausationID != a.ID {
		t.Errorf("follow-up event correlation %q causation %q, want %q and %q", sb.ev.CorrelationID, sb.ev.CausationID, a.CorrelationID, a.ID)
	}
}

// TestProducerSpanParent checks where a producer span's parent comes from:
// the context first, else the trace context the event already carries.
func TestProducerSpanParent(t *testing.T) {
	t.Parallel()
	tr, rec := newTracing(t, telemetry.WithMessagingSystem("kafka"))
	hook := tr.PublishHook()

	upstream := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	e := event.New("s", "t", nil)
	e.TraceParent, e.TraceState = upstream, "vendor=1"
	_, done := hook.Before(context.Background(), []*event.Event{e}, []string{"orders"})
	done(nil)
	s := rec.Ended()[0]
	if got := s.Parent().TraceID().String(); got != "0af7651916cd43dd8448eb211c80319c" || s.Parent().SpanID().String() != "b7ad6b7169203331" {
		t.Errorf("parent %v, want the event's upstream traceparent", s.Parent())
	}
	if e.TraceParent == upstream || !w3c.MatchString(e.TraceParent) {
		t.Errorf("event traceparent %q: want this span's, in W3C form", e.TraceParent)
	}
	if e.TraceState != "vendor=1" {
		t.Errorf("tracestate %q not carried through", e.TraceState)
	}
	wantAttrs(t, s, map[attribute.Key]any{"messaging.system": "kafka"})

	// A span in the context wins over what the event carries.
	ctx, parent := sdktrace.NewTracerProvider().Tracer("test").Start(context.Background(), "parent")
	defer parent.End()
	e2 := event.New("s", "t", nil)
	e2.TraceParent = upstream
	out, done := hook.Before(ctx, []*event.Event{e2}, []string{"orders"})
	done(errors.New("broker refused"))
	s = rec.Ended()[1]
	if s.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Errorf("parent %v, want the context's span %v", s.Parent(), parent.SpanContext())
	}
	if trace.SpanContextFromContext(out).SpanID() != s.SpanContext().SpanID() {
		t.Error("a single-event publish should continue in the producer span's context")
	}
	if s.Status().Code != codes.Error || s.Status().Description != "broker refused" {
		t.Errorf("refused publish status %v, want error", s.Status())
	}
	if _, ok := attr(s, "error.type"); !ok {
		t.Error("refused publish lacks error.type")
	}
}

func TestConsumerSpanOutcome(t *testing.T) {
	t.Parallel()
	tr, rec := newTracing(t)
	cases := []struct {
		name    string
		err     error
		outcome string
	}{
		{"ok", nil, ""},
		{"retry", consumer.RetryAfter(errors.New("busy"), time.Second), "retry"},
		{"permanent", consumer.Permanent(errors.New("invalid order")), "dlq"},
		{"drop", consumer.Drop(errors.New("stale")), "dropped"},
		{"plain", errors.New("db down"), "failed"},
	}
	for i, tc := range cases {
		m := &consumer.Message{Event: event.New("s", "t", nil), Topic: "orders", Group: "billing", Attempt: i + 1}
		var inHandler trace.SpanContext
		h := tr.Middleware()(func(ctx context.Context, got *consumer.Message) error {
			inHandler = trace.SpanContextFromContext(ctx)
			if got != m {
				t.Errorf("%s: handler got another message", tc.name)
			}
			return tc.err
		})
		if err := h(context.Background(), m); !errors.Is(err, tc.err) {
			t.Errorf("%s: middleware returned %v, want %v", tc.name, err, tc.err)
		}
		s := rec.Ended()[i]
		if s.SpanContext().SpanID() != inHandler.SpanID() {
			t.Errorf("%s: handler context does not hold the consumer span", tc.name)
		}
		if s.Parent().IsValid() {
			t.Errorf("%s: event without traceparent should start a trace, parent %v", tc.name, s.Parent())
		}
		v, ok := attr(s, telemetry.AttrOutcome)
		switch {
		case tc.outcome == "" && (ok || s.Status().Code == codes.Error):
			t.Errorf("%s: success marked as failure: %v %v", tc.name, v, s.Status())
		case tc.outcome != "" && (v.AsString() != tc.outcome || s.Status().Code != codes.Error):
			t.Errorf("%s: outcome %q status %v, want %q and error", tc.name, v.AsString(), s.Status(), tc.outcome)
		}
		wantAttrs(t, s, map[attribute.Key]any{telemetry.AttrAttempt: i + 1, "messaging.consumer.group.name": "billing"})
	}

	// A panic is recorded and handed on.
	boom := tr.Middleware()(func(context.Context, *consumer.Message) error { panic("nil map") })
	func() {
		defer func() {
			if p := recover(); p != "nil map" {
				t.Errorf("recovered %v, want the handler's panic", p)
			}
		}()
		_ = boom(context.Background(), &consumer.Message{Topic: "orders", Group: "billing"})
	}()
	if s := rec.Ended()[len(cases)]; s.Status().Code != codes.Error || !strings.Contains(s.Status().Description, "nil map") {
		t.Errorf("panicking handler's span status %v", s.Status())
	}

	// A poison message (no event) still gets a span.
	h := tr.Middleware()(func(context.Context, *consumer.Message) error { return nil })
	if err := h(context.Background(), &consumer.Message{Topic: "orders", Group: "billing", DecodeErr: errors.New("bad")}); err != nil {
		t.Fatal(err)
	}
	if got := rec.Ended()[len(cases)+1].Name(); got != "process orders" {
		t.Errorf("poison message span %q", got)
	}
}

func TestNewTracingErrors(t *testing.T) {
	t.Parallel()
	if _, err := telemetry.NewTracing(nil); err == nil {
		t.Error("nil provider accepted")
	}
	tp := sdktrace.NewTracerProvider()
	if _, err := telemetry.NewTracing(tp, telemetry.WithMessagingSystem("")); err == nil {
		t.Error("empty messaging system accepted")
	}
	if _, err := telemetry.NewTracing(tp, telemetry.WithPropagator(nil)); err == nil {
		t.Error("nil propagator accepted")
	}
}

// TestBaggage carries baggage beside trace context when the propagator
// includes it.
func TestBaggage(t *testing.T) {
	t.Parallel()
	tr, _ := newTracing(t, telemetry.WithPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})))
	ctx := propagation.Baggage{}.Extract(context.Background(), propagation.MapCarrier{"baggage": "tenant=acme"})
	e := event.New("s", "t", nil)
	_, done := tr.PublishHook().Before(ctx, []*event.Event{e}, []string{"orders"})
	done(nil)
	if got, _ := e.Extension("baggage"); got != "tenant=acme" {
		t.Errorf("baggage extension %q, want tenant=acme", got)
	}
	if !w3c.MatchString(e.TraceParent) {
		t.Errorf("traceparent %q", e.TraceParent)
	}
}
