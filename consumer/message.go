package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/event"
)

// Handler handles one event. Returning nil acknowledges it; an error is a
// failure that the middleware turns into a retry, a dead letter or a drop.
type Handler func(ctx context.Context, m *Message) error

// Middleware wraps a handler. Each built-in middleware is in its own file.
type Middleware func(Handler) Handler

// Message is one delivery being handled.
type Message struct {
	// Event is the decoded envelope; nil when DecodeErr is set.
	Event *event.Event
	// DecodeErr says why the delivery could not be decoded (a poison
	// message). Such messages go to the dead-letter queue at once.
	DecodeErr error
	// Topic and Group the delivery came from.
	Topic string
	Group string
	// Handler names the handler chosen for the event (its type).
	Handler string
	// Attempt is 1 on the first delivery.
	Attempt int
	// Sequence is the position in the topic; Stored when the broker stored it.
	Sequence uint64
	Stored   time.Time
	// Raw is the broker message as delivered.
	Raw *broker.Message
	// Mode is the router's delivery mode.
	Mode Mode

	delivery broker.Delivery
	received time.Time
	// ev holds Event and ctx the handler's context, so that a delivery
	// costs one allocation.
	ev  event.Event
	ctx msgCtx
	// outcome is set by middleware that settles a delivery successfully in
	// a special way (dead-lettered, duplicate, unknown type).
	outcome Outcome
}

// Received returns when the router took the delivery from the broker.
func (m *Message) Received() time.Time { return m.received }

// Depth returns the causation depth of the event: 0 for an event not caused
// by another, parent depth + 1 for events published while handling one.
func (m *Message) Depth() int {
	if m.Event == nil {
		return 0
	}
	return Depth(m.Event)
}

// ExtDepth is the extension attribute holding the causation depth.
const ExtDepth = "depth"

// Depth returns e's causation depth (the "depth" extension), 0 if unset or
// not a number.
func Depth(e *event.Event) int {
	v, ok := e.Extensions[ExtDepth]
	if !ok {
		return 0
	}
	n := 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' || n > 1<<20 {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}

type ctxKey struct{}

// msgCtx is a context carrying a message, like WithMessage's.
type msgCtx struct {
	context.Context
	m *Message
}

func (c *msgCtx) Value(key any) any {
	if key == (ctxKey{}) {
		return c.m
	}
	return c.Context.Value(key)
}

// newMessage returns the Message of delivery d from topic, with its
// envelope decoded by binding.
func newMessage(d broker.Delivery, topic, group string, mode Mode, binding event.Binding) *Message {
	raw := d.Message()
	m := &Message{
		Topic:    topic,
		Group:    group,
		Attempt:  d.Attempt(),
		Sequence: d.Sequence(),
		Stored:   d.Timestamp(),
		Raw:      raw,
		Mode:     mode,
		delivery: d,
		received: time.Now(),
	}
	m.Event, m.DecodeErr = binding.DecodeInto(&m.ev, raw.Header, raw.Data)
	if m.Event != nil {
		m.Handler = m.Event.Type
	}
	return m
}

// context returns ctx carrying m (see WithMessage) without allocating.
func (m *Message) context(ctx context.Context) context.Context {
	m.ctx = msgCtx{Context: ctx, m: m}
	return &m.ctx
}

// WithMessage returns ctx carrying m, as the router does for handlers.
func WithMessage(ctx context.Context, m *Message) context.Context {
	return context.WithValue(ctx, ctxKey{}, m)
}

// FromContext returns the message being handled, if ctx is a handler's.
// Publishers use it to set correlation and causation ids.
func FromContext(ctx context.Context) (*Message, bool) {
	m, ok := ctx.Value(ctxKey{}).(*Message)
	return m, ok
}

// Mode is a delivery mode.
type Mode int

const (
	// AtLeastOnce acknowledges after the handler succeeded; a failure is
	// retried, then dead-lettered. An event may be handled more than once
	// (after a crash or an ack wait expiry). The default.
	AtLeastOnce Mode = iota
	// AtMostOnce acknowledges before the handler runs; a failure is
	// dead-lettered for inspection, never retried. An event may be lost if
	// the process dies while handling it.
	AtMostOnce
	// ExactlyOnce adds, on top of AtLeastOnce, a claim of the event id in an
	// idempotency store before the handler and broker-confirmed acks, so
	// each event's effects happen once per group (publishers deduplicate by
	// event id). Requires WithIdempotency.
	ExactlyOnce
)

// String returns the mode's name.
func (m Mode) String() string {
	switch m {
	case AtMostOnce:
		return "at-most-once"
	case ExactlyOnce:
		return "exactly-once"
	default:
		return "at-least-once"
	}
}

// ParseMode reads "at-least-once", "at-most-once" or "exactly-once".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "at-least-once", "":
		return AtLeastOnce, nil
	case "at-most-once":
		return AtMostOnce, nil
	case "exactly-once":
		return ExactlyOnce, nil
	}
	return 0, fmt.Errorf("consumer: delivery mode %q: want at-least-once, at-most-once or exactly-once", s)
}

// Outcomes: errors a handler or middleware returns to tell the router what
// to do with the delivery.

// ErrPermanent marks a failure that retrying cannot fix: the event goes to
// the dead-letter queue now. Wrap with Permanent.
var ErrPermanent = errors.New("permanent failure")

// ErrDrop marks an event to discard without dead-lettering (the broker
// terminates the delivery). Wrap with Drop.
var ErrDrop = errors.New("dropped")

// ErrUnknownType is the failure for an event with no handler when the
// router is configured to dead-letter those.
var ErrUnknownType = errors.New("no handler for event type")

// Permanent marks err as not worth retrying.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrPermanent, err)
}

// Drop marks err as a reason to discard the event.
func Drop(err error) error {
	if err == nil {
		err = errors.New("no reason given")
	}
	return fmt.Errorf("%w: %w", ErrDrop, err)
}

// RetryError asks the router to redeliver the event after Delay.
type RetryError struct {
	Err   error
	Delay time.Duration
}

// Error describes the failure and the delay.
func (e *RetryError) Error() string {
	return fmt.Sprintf("retry in %v: %v", e.Delay, e.Err)
}

// Unwrap returns the failure.
func (e *RetryError) Unwrap() error { return e.Err }

// isRetry reports whether err asks for a redelivery after a delay. (The
// target of errors.As escapes: the helpers keep it off the success path.)
func isRetry(err error) bool {
	var re *RetryError
	return errors.As(err, &re)
}

func retryDelay(err error) time.Duration {
	var re *RetryError
	errors.As(err, &re)
	return re.Delay
}

// RetryAfter asks for redelivery of the event after delay.
func RetryAfter(err error, delay time.Duration) error {
	return &RetryError{Err: err, Delay: delay}
}
