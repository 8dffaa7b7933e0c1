package telemetry

import (
	"context"
	"errors"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
)

// ScopeName is the instrumentation scope of Herald's spans.
const ScopeName = "github.com/heraldhq/herald/telemetry"

// Span attributes Herald adds to the semantic conventions'.
const (
	// AttrCorrelationID holds the event's correlation id.
	AttrCorrelationID = attribute.Key("herald.correlation_id")
	// AttrCausationID holds the id of the event that caused this one.
	AttrCausationID = attribute.Key("herald.causation_id")
	// AttrAttempt holds the delivery attempt, 1 for the first delivery.
	AttrAttempt = attribute.Key("herald.attempt")
	// AttrOutcome says what the handler's error asks the router to do:
	// retry (a RetryAfter error), dlq (a permanent failure), dropped (a
	// Drop), or failed (a plain error, retried or dead-lettered by the
	// router's retry policy). Only set on failure.
	AttrOutcome = attribute.Key("herald.outcome")
)

// TracingOption configures Tracing.
type TracingOption func(*Tracing) error

// WithMessagingSystem sets the messaging.system attribute: "nats",
// "kafka" or "rabbitmq" for Herald's brokers. Default "nats".
func WithMessagingSystem(system string) TracingOption {
	return func(t *Tracing) error {
		if system == "" {
			return errors.New("WithMessagingSystem: system is empty")
		}
		t.system = semconv.MessagingSystemKey.String(system)
		return nil
	}
}

// WithPropagator sets how trace context is written to and read from
// events. Default propagation.TraceContext{} (W3C traceparent and
// tracestate, kept in the event's TraceParent and TraceState). Keys other
// than those two are carried as event extensions when their names are
// valid extension names (baggage is).
func WithPropagator(p propagation.TextMapPropagator) TracingOption {
	return func(t *Tracing) error {
		if p == nil {
			return errors.New("WithPropagator: propagator is nil")
		}
		t.prop = p
		return nil
	}
}

// Tracing makes OpenTelemetry spans for publishing and handling events,
// following the messaging semantic conventions (semconv v1.43.0): a
// producer span "send <topic>" per published event and a consumer span
// "process <topic>" per handler run, the latter a child of the former
// through the event's traceparent. It is safe for concurrent use.
type Tracing struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	system attribute.KeyValue

	// Made once: a span option is an interface, boxing one per span
	// allocates; so does building a span name per event.
	producer, consumer trace.SpanStartOption
	sendNames          seriesCache[string, string]
	processNames       seriesCache[string, string]
}

// spanName returns prefix+topic, cached per topic.
func spanName(c *seriesCache[string, string], prefix, topic string) string {
	if n, ok := c.load(topic); ok {
		return n
	}
	return c.add(topic, func() string { return prefix + topic })
}

// NewTracing returns tracing that starts spans with tp's tracer (for
// example the provider SetupOTLP returns, or an SDK provider of your own).
func NewTracing(tp trace.TracerProvider, opts ...TracingOption) (*Tracing, error) {
	if tp == nil {
		return nil, errors.New("telemetry: NewTracing: tracer provider is nil")
	}
	t := &Tracing{
		tracer: tp.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL)),
		prop:   propagation.TraceContext{},
		system: semconv.MessagingSystemKey.String("nats"),

		producer: trace.WithSpanKind(trace.SpanKindProducer),
		consumer: trace.WithSpanKind(trace.SpanKindConsumer),
	}
	for _, o := range opts {
		if err := o(t); err != nil {
			return nil, fmt.Errorf("telemetry: %w", err)
		}
	}
	return t, nil
}

// PublishHook is the interface of herald.PublishHook, declared here so
// telemetry does not import the SDK facade that wires it.
type PublishHook interface {
	Before(ctx context.Context, events []*event.Event, topics []string) (context.Context, func(err error))
}

// PublishHook returns the hook that makes producer spans; put it in
// herald.Config.Hooks.
//
// Each event's span is a child of the span in the publishing context (the
// consumer span, when publishing from a handler traced by Middleware);
// without one, of the trace context the event already carries; else it
// starts a trace. The span's context is written into the event's
// TraceParent and TraceState, replacing what was there. The span ends when
// the broker confirmed or refused the batch, with an error status if it
// refused it.
func (t *Tracing) PublishHook() PublishHook { return producerHook{t} }

type producerHook struct{ t *Tracing }

func (h producerHook) Before(ctx context.Context, events []*event.Event, topics []string) (context.Context, func(error)) {
	t := h.t
	inCtx := trace.SpanContextFromContext(ctx).IsValid()
	spans := make([]trace.Span, len(events))
	out := ctx
	for i, e := range events {
		topic := ""
		if i < len(topics) {
			topic = topics[i]
		}
		parent := ctx
		if !inCtx && e.TraceParent != "" {
			parent = t.prop.Extract(ctx, eventCarrier{e})
		}
		attrs := make([]attribute.KeyValue, 0, 12)
		attrs = append(attrs,
			t.system,
			semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationName("send"),
			semconv.MessagingDestinationName(topic),
		)
		attrs = appendEventAttrs(attrs, e)
		sctx, span := t.tracer.Start(parent, spanName(&t.sendNames, "send ", topic),
			t.producer, trace.WithAttributes(attrs...))
		// Replace, not merge: the event carries this span's context only.
		e.TraceParent, e.TraceState = "", ""
		t.prop.Inject(sctx, eventCarrier{e})
		spans[i] = span
		if len(events) == 1 {
			out = sctx
		}
	}
	return out, func(err error) {
		for _, s := range spans {
			if err != nil {
				s.RecordError(err)
				s.SetStatus(codes.Error, err.Error())
				s.SetAttributes(semconv.ErrorType(err))
			}
			s.End()
		}
	}
}

func appendEventAttrs(attrs []attribute.KeyValue, e *event.Event) []attribute.KeyValue {
	attrs = append(attrs,
		semconv.MessagingMessageID(e.ID),
		semconv.CloudEventsEventID(e.ID),
		semconv.CloudEventsEventSource(e.Source),
		semconv.CloudEventsEventType(e.Type),
		semconv.CloudEventsEventSpecVersion(event.SpecVersion),
	)
	if e.Subject != "" {
		attrs = append(attrs, semconv.CloudEventsEventSubject(e.Subject))
	}
	if e.CorrelationID != "" {
		attrs = append(attrs, AttrCorrelationID.String(e.CorrelationID))
	}
	if e.CausationID != "" {
		attrs = append(attrs, AttrCausationID.String(e.CausationID))
	}
	return attrs
}

// Middleware returns consumer middleware that runs each handler inside a
// consumer span "process <topic>", a child of the trace context the event
// carries (a new trace if it carries none). The span is in the handler's
// context, so events the handler publishes through a traced client are its
// children. A failing handler's span gets an error status, error.type and
// herald.outcome; a panicking one too, and the panic goes on to the
// router's recovery. Add it with consumer.WithMiddleware.
func (t *Tracing) Middleware() consumer.Middleware {
	return func(next consumer.Handler) consumer.Handler {
		return func(ctx context.Context, m *consumer.Message) error {
			parent := ctx
			attrs := make([]attribute.KeyValue, 0, 16)
			attrs = append(attrs,
				t.system,
				semconv.MessagingOperationTypeProcess,
				semconv.MessagingOperationName("process"),
				semconv.MessagingDestinationName(m.Topic),
				semconv.MessagingConsumerGroupName(m.Group),
				AttrAttempt.Int(m.Attempt),
			)
			if m.Event != nil {
				if m.Event.TraceParent != "" {
					parent = t.prop.Extract(ctx, eventCarrier{m.Event})
				}
				attrs = appendEventAttrs(attrs, m.Event)
			}
			ctx, span := t.tracer.Start(parent, spanName(&t.processNames, "process ", m.Topic),
				t.consumer, trace.WithAttributes(attrs...))
			defer span.End()
			defer func() {
				// Recorded, then handed on to the router's panic recovery.
				if p := recover(); p != nil {
					span.SetStatus(codes.Error, fmt.Sprintf("panic: %v", p))
					span.SetAttributes(semconv.ErrorTypeKey.String("panic"), AttrOutcome.String("failed"))
					panic(p)
				}
			}()
			err := next(ctx, m)
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
				span.SetAttributes(semconv.ErrorType(err), AttrOutcome.String(failureOutcome(err)))
			}
			return err
		}
	}
}

// failureOutcome classifies a handler error by what it asks the router to
// do with the delivery.
func failureOutcome(err error) string {
	var re *consumer.RetryError
	switch {
	case errors.As(err, &re):
		return consumer.OutcomeRetry.String()
	case errors.Is(err, consumer.ErrDrop):
		return consumer.OutcomeDrop.String()
	case errors.Is(err, consumer.ErrPermanent):
		return consumer.OutcomeDeadLetter.String()
	default:
		return "failed"
	}
}

// eventCarrier lets a propagator read and write an event's trace context:
// traceparent and tracestate are event fields, other keys extensions.
type eventCarrier struct{ e *event.Event }

// Get returns the value of key, "" if unset.
func (c eventCarrier) Get(key string) string {
	v, _ := c.e.Extension(key)
	return v
}

// Set sets key; a key that is not a valid extension name is not carried.
func (c eventCarrier) Set(key, value string) {
	_ = c.e.SetExtension(key, value)
}

// Keys lists the trace keys the event carries.
func (c eventCarrier) Keys() []string {
	var keys []string
	if c.e.TraceParent != "" {
		keys = append(keys, event.ExtTraceParent)
	}
	if c.e.TraceState != "" {
		keys = append(keys, event.ExtTraceState)
	}
	for k := range c.e.Extensions {
		keys = append(keys, k)
	}
	return keys
}
