// Package broker is Herald's broker SPI: the contract every adapter
// (memory, NATS JetStream, Kafka, RabbitMQ) implements. It moves bytes and
// headers; it knows messages, not events.
//
// A [Publisher] publishes batches and returns only once the broker confirmed
// every message. A [Subscriber] joins a named group on a topic: every group
// receives every message (fan-out), and inside a group each message goes to
// one member (work queue). A [Delivery] is acked, nacked with a delay, or
// terminated.
//
// The conformance suite in broker/brokertest states these semantics as
// tests; every adapter runs it.
package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors adapters return (wrapped) so callers can branch on them.
var (
	// ErrClosed is returned by operations on a closed publisher,
	// subscriber or subscription.
	ErrClosed = errors.New("broker: closed")
	// ErrInvalidTopic is returned for a topic name the broker cannot use.
	ErrInvalidTopic = errors.New("broker: invalid topic name")
	// ErrInvalidMessage is returned for a message the broker cannot accept
	// (no route, a route with illegal characters, too large...).
	ErrInvalidMessage = errors.New("broker: invalid message")
	// ErrUnavailable is returned when the broker cannot be reached or is
	// not ready.
	ErrUnavailable = errors.New("broker: unavailable")
	// ErrRevoked is returned when settling a [Revocable] delivery that the
	// broker took back before it was claimed.
	ErrRevoked = errors.New("broker: delivery revoked: its partition moved to another member")
)

// Message is what travels through a broker.
//
// Publishers read a Message and do not keep it after Publish returns.
// A Message returned by [Delivery.Message] belongs to the caller.
type Message struct {
	// Topic is the named log the message is appended to ("orders").
	Topic string
	// Route says what the message is inside its topic (Herald uses the
	// event type). Subscribers can filter on it; NATS uses it in the
	// subject, RabbitMQ as the routing key.
	Route string
	// Key orders messages: those with the same key reach a group in
	// publish order. Empty means no ordering requirement.
	Key string
	// ID deduplicates: a broker with a dedup window stores a message with
	// an ID it already holds only once. Empty disables deduplication.
	ID string
	// Header carries metadata (CloudEvents attributes in binary mode).
	Header map[string]string
	// Data is the payload, carried unchanged.
	Data []byte
}

// Publisher publishes messages. Implementations are safe for concurrent use.
type Publisher interface {
	// Publish appends msgs to their topics and returns when the broker has
	// confirmed every one of them. If any message was not confirmed it
	// returns a *PublishError saying which; the others are confirmed.
	// Messages with the same Key in one call keep their order.
	Publish(ctx context.Context, msgs ...*Message) error
	// Close releases the publisher. It does not close a connection the
	// caller supplied.
	Close() error
}

// Subscriber joins consumer groups. Implementations are safe for concurrent
// use.
type Subscriber interface {
	// Subscribe joins group opts.Group on topic, creating the group (from
	// opts.Start) if it does not exist. An existing group keeps its position;
	// opts.Start applies only when the group is created.
	Subscribe(ctx context.Context, topic string, opts SubscribeOptions) (Subscription, error)
	// Close stops every subscription made by this subscriber.
	Close() error
}

// Broker is an adapter that both publishes and subscribes.
type Broker interface {
	Publisher
	Subscriber
}

// Subscription is one member of a group receiving deliveries.
type Subscription interface {
	// Next blocks until a delivery is available, ctx is done (returns
	// ctx.Err()), or the subscription is closed (returns ErrClosed).
	// Next is safe to call from several goroutines.
	Next(ctx context.Context) (Delivery, error)
	// Close stops receiving. Deliveries already returned by Next can still
	// be acked until the Subscriber is closed; those never acked are
	// redelivered to the group. Close is idempotent.
	Close() error
}

// Delivery is one delivery of a message to a group member. It must be
// settled exactly once with Ack, Nack or Term; an unsettled delivery is
// redelivered after the group's ack wait.
type Delivery interface {
	// Message returns the delivered message.
	Message() *Message
	// Attempt is 1 on the first delivery and grows with each redelivery.
	Attempt() int
	// Sequence is the message's position in its topic (0 when the broker
	// has none).
	Sequence() uint64
	// Timestamp is when the broker stored the message.
	Timestamp() time.Time
	// Ack settles the delivery: the group will not see the message again.
	// With SubscribeOptions.ConfirmAcks it waits for the broker to confirm.
	Ack(ctx context.Context) error
	// Nack asks for redelivery to the group after delay (0: at once).
	Nack(ctx context.Context, delay time.Duration) error
	// Term settles the delivery without success: the message is never
	// redelivered to this group. reason is recorded where the broker can.
	Term(ctx context.Context, reason string) error
	// InProgress resets the ack wait, for handlers that run long.
	InProgress(ctx context.Context) error
}

// Revocable is implemented by deliveries a broker may take back before they
// are handled: those of a key-ordered group (SubscribeOptions.KeyOrder)
// whose partition moves to another member. A member that loses a partition
// hands back what it received and did not start, in stream order, so the
// next owner gets it first; what it started, it finishes.
//
// A caller that queues deliveries before handling them (the consumer
// router's lanes) calls Claim just before it handles one. Settling a
// delivery claims it too; settling one that was revoked does nothing and
// returns an error wrapping ErrRevoked.
type Revocable interface {
	// Claim marks the delivery as being handled and reports true, or
	// reports false when the broker already took it back: the caller must
	// then neither handle nor settle it. Once Claim reported true the
	// delivery is the caller's until it settles it. Claim is safe to call
	// more than once.
	Claim() bool
}

// Claim claims d if it is [Revocable] and reports whether the caller may
// handle it; deliveries that cannot be revoked are always the caller's.
func Claim(d Delivery) bool {
	if r, ok := d.(Revocable); ok {
		return r.Claim()
	}
	return true
}

// Redelivered reports whether d is not the first delivery of its message.
func Redelivered(d Delivery) bool { return d.Attempt() > 1 }

// SubscribeOptions configure a subscription.
type SubscribeOptions struct {
	// Group names the consumer group. Required.
	Group string
	// Start is where a new group begins. Default: StartNew.
	Start Start
	// Routes, when not empty, restricts the group to messages with one of
	// these routes.
	Routes []string
	// AckWait is how long a delivery may stay unsettled before it is
	// redelivered. Adapters may keep the deliveries of an open
	// subscription alive (natsjs does), so that AckWait bounds how long a
	// member that died holds its deliveries. Default 30s.
	AckWait time.Duration
	// MaxInFlight caps deliveries handed out and not yet settled for this
	// group. Default 1024.
	MaxInFlight int
	// ConfirmAcks makes Ack wait for the broker's confirmation (JetStream's
	// double ack). It costs a round trip per ack.
	ConfirmAcks bool
	// KeyOrder asks that the messages of one key reach one member of the
	// group at a time, in order, even when the group has several members
	// in several processes: the topic's partitions are shared out among
	// the live members, and a partition moves only once its previous owner
	// stopped. Adapters that cannot guarantee it return an error naming
	// why. Within one subscription, deliveries of a partition keep their
	// order.
	KeyOrder bool
	// InactiveAfter, when positive, lets the broker delete the group by
	// itself once it has had no member for that long, even when its last
	// member died without a word (SIGKILL). For throwaway groups, such as
	// the private one of `herald sub`. Adapters without such a setting
	// ignore it (docs/operations.md says which). Default 0: the group
	// stays until deleted.
	InactiveAfter time.Duration
}

// Defaults for SubscribeOptions.
const (
	DefaultAckWait     = 30 * time.Second
	DefaultMaxInFlight = 1024
)

// WithDefaults returns o with zero fields set to their defaults, or an error
// naming the first invalid field.
func (o SubscribeOptions) WithDefaults() (SubscribeOptions, error) {
	if o.Group == "" {
		return o, errors.New("broker: SubscribeOptions.Group is required")
	}
	if err := ValidateName("group", o.Group); err != nil {
		return o, err
	}
	if o.AckWait < 0 || o.MaxInFlight < 0 || o.InactiveAfter < 0 {
		return o, errors.New("broker: SubscribeOptions.AckWait, MaxInFlight and InactiveAfter must not be negative")
	}
	if o.AckWait == 0 {
		o.AckWait = DefaultAckWait
	}
	if o.MaxInFlight == 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	return o, nil
}

// ValidateName checks a topic or group name: 1 to 200 characters, ASCII
// letters, digits, '-', '_' and '.' (not first, not last, not doubled).
// what names the kind of name in the error ("topic", "group").
func ValidateName(what, name string) error {
	if name == "" {
		return fmt.Errorf("%w: %s name is empty", ErrInvalidTopic, what)
	}
	if len(name) > 200 {
		return fmt.Errorf("%w: %s name %q is longer than 200 characters", ErrInvalidTopic, what, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		case c == '.' && i > 0 && i < len(name)-1 && name[i-1] != '.':
		default:
			return fmt.Errorf("%w: %s name %q: only letters, digits, '-', '_' and inner single '.' are allowed", ErrInvalidTopic, what, name)
		}
	}
	return nil
}

// ValidateRoute checks a message route: 1 to 255 characters, no spaces or
// control characters, no '*' or '>', no empty dot-separated token.
func ValidateRoute(route string) error {
	if route == "" {
		return fmt.Errorf("%w: route is empty", ErrInvalidMessage)
	}
	if len(route) > 255 {
		return fmt.Errorf("%w: route %q is longer than 255 characters", ErrInvalidMessage, route)
	}
	prev := byte('.')
	for i := 0; i < len(route); i++ {
		c := route[i]
		if c <= ' ' || c == 0x7f || c == '*' || c == '>' {
			return fmt.Errorf("%w: route %q: spaces, control characters, '*' and '>' are not allowed", ErrInvalidMessage, route)
		}
		if c == '.' && prev == '.' {
			return fmt.Errorf("%w: route %q has an empty token", ErrInvalidMessage, route)
		}
		prev = c
	}
	if prev == '.' {
		return fmt.Errorf("%w: route %q has an empty token", ErrInvalidMessage, route)
	}
	return nil
}

// PublishError reports which messages of a Publish call were not confirmed.
type PublishError struct {
	// Errs has one entry per message of the call, in order; nil means
	// confirmed.
	Errs []error
}

// Error summarises the failures: how many, and the first one.
func (e *PublishError) Error() string {
	n, first := 0, error(nil)
	for _, err := range e.Errs {
		if err != nil {
			if first == nil {
				first = err
			}
			n++
		}
	}
	return fmt.Sprintf("broker: %d of %d messages not confirmed: %v", n, len(e.Errs), first)
}

// Unwrap returns the individual errors, so errors.Is finds a sentinel in
// any of them.
func (e *PublishError) Unwrap() []error {
	var out []error
	for _, err := range e.Errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// Failed reports whether message i of the call failed, and why.
func (e *PublishError) Failed(i int) error {
	if i < 0 || i >= len(e.Errs) {
		return nil
	}
	return e.Errs[i]
}

// NewPublishError returns a *PublishError for errs, or nil when every entry
// is nil.
func NewPublishError(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return &PublishError{Errs: errs}
		}
	}
	return nil
}

// StartKind says where a new group begins.
type StartKind int

// Start kinds.
const (
	// StartNew delivers only messages published after the group is created.
	StartNew StartKind = iota
	// StartFirst delivers from the oldest retained message.
	StartFirst
	// StartSequence delivers from a topic sequence number.
	StartSequence
	// StartTime delivers from the first message stored at or after a time.
	StartTime
)

// Start is a start position for a new group. The zero value is StartNew.
type Start struct {
	Kind StartKind
	Seq  uint64
	Time time.Time
}

// Convenience start positions.
var (
	FromNew   = Start{Kind: StartNew}
	FromFirst = Start{Kind: StartFirst}
)

// FromSequence starts at topic sequence seq (1 is the first message).
func FromSequence(seq uint64) Start { return Start{Kind: StartSequence, Seq: seq} }

// FromTime starts at the first message stored at or after t.
func FromTime(t time.Time) Start { return Start{Kind: StartTime, Time: t} }

// String formats s as ParseStart reads it.
func (s Start) String() string {
	switch s.Kind {
	case StartFirst:
		return "first"
	case StartSequence:
		return "seq:" + strconv.FormatUint(s.Seq, 10)
	case StartTime:
		return "time:" + s.Time.Format(time.RFC3339Nano)
	default:
		return "new"
	}
}

// ParseStart reads "new", "first", "seq:N" (N >= 1) or "time:RFC3339".
func ParseStart(s string) (Start, error) {
	switch {
	case s == "" || s == "new":
		return FromNew, nil
	case s == "first":
		return FromFirst, nil
	case strings.HasPrefix(s, "seq:"):
		n, err := strconv.ParseUint(s[4:], 10, 64)
		if err != nil || n == 0 {
			return Start{}, fmt.Errorf("start %q: want seq:N with N a positive integer", s)
		}
		return FromSequence(n), nil
	case strings.HasPrefix(s, "time:"):
		t, err := time.Parse(time.RFC3339Nano, s[5:])
		if err != nil {
			return Start{}, fmt.Errorf("start %q: want time:RFC3339, for example time:2026-01-02T15:04:05Z", s)
		}
		return FromTime(t), nil
	}
	return Start{}, fmt.Errorf("start %q: want new, first, seq:N or time:RFC3339", s)
}

// TopicConfig is the retention and layout of a topic. Zero fields mean the
// adapter's default.
type TopicConfig struct {
	// Partitions splits the topic for ordered parallel consumption; keys
	// map to partitions by hash. Default 1.
	Partitions int
	// MaxAge drops messages older than this. 0: keep forever.
	MaxAge time.Duration
	// MaxBytes and MaxMsgs cap the topic's size; the oldest messages go.
	// 0: unlimited.
	MaxBytes int64
	MaxMsgs  int64
	// Replicas is the number of copies in a cluster. Default 1.
	Replicas int
	// DedupWindow is how long a message ID is remembered. Default 2m;
	// never longer than MaxAge on NATS.
	DedupWindow time.Duration
}

// TopicManager is implemented by adapters that create and configure topics
// explicitly. Topics are otherwise created on first use with defaults.
type TopicManager interface {
	// EnsureTopic creates topic with cfg, or updates its retention.
	EnsureTopic(ctx context.Context, topic string, cfg TopicConfig) error
}

// Partition maps key to one of n partitions with 32-bit FNV-1a. Every
// adapter that partitions by hash uses it, so a key lands on the same
// partition whichever process published it. An empty key or n <= 1 gives 0.
func Partition(key string, n int) int {
	if n <= 1 || key == "" {
		return 0
	}
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}
