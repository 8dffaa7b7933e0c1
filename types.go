package herald

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/schema/serde"
)

// Codec encodes and decodes the payload of a typed event.
type Codec[T any] interface {
	// ContentType is the datacontenttype of encoded payloads.
	ContentType() string
	Encode(v T) ([]byte, error)
	Decode(ctx context.Context, data []byte) (T, error)
}

// schemaRef is implemented by codecs whose payloads reference a schema
// (the event's dataschema).
type schemaRef interface{ DataSchema() string }

// JSONCodec encodes payloads as JSON (application/json). It is the default.
type JSONCodec[T any] struct{}

// ContentType returns "application/json".
func (JSONCodec[T]) ContentType() string { return "application/json" }

// Encode marshals v.
func (JSONCodec[T]) Encode(v T) ([]byte, error) { return json.Marshal(v) }

// Decode unmarshals data.
func (JSONCodec[T]) Decode(_ context.Context, data []byte) (T, error) {
	var v T
	err := json.Unmarshal(data, &v)
	return v, err
}

// EventType is an event type bound to a Go type: define it once, publish Go
// values of it and handle Go values of it. It is an immutable value, safe to
// share.
type EventType[T any] struct {
	name   string
	topic  string
	source string
	codec  Codec[T]
}

// TypeOption configures an EventType.
type TypeOption func(*typeConfig)

type typeConfig struct {
	topic, source string
	codec         any
}

// OnTopic publishes the type to topic instead of the client's topic for it.
func OnTopic(topic string) TypeOption { return func(c *typeConfig) { c.topic = topic } }

// FromSource sets the type's default event source.
func FromSource(source string) TypeOption { return func(c *typeConfig) { c.source = source } }

// WithCodec sets the payload codec. Default JSONCodec. The codec must be a
// Codec of the type's Go type.
func WithCodec[T any](c Codec[T]) TypeOption { return func(tc *typeConfig) { tc.codec = c } }

// Type defines an event type named name (for example
// "shop.order.placed.v1") whose payload is a T. It panics if a WithCodec
// option does not match T: that is a programming error found at startup.
func Type[T any](name string, opts ...TypeOption) EventType[T] {
	var tc typeConfig
	for _, o := range opts {
		o(&tc)
	}
	t := EventType[T]{name: name, topic: tc.topic, source: tc.source, codec: JSONCodec[T]{}}
	if tc.codec != nil {
		c, ok := tc.codec.(Codec[T])
		if !ok {
			panic(fmt.Sprintf("herald: Type %q: codec %T does not encode %T", name, tc.codec, *new(T)))
		}
		t.codec = c
	}
	return t
}

// Name returns the event type's name.
func (t EventType[T]) Name() string { return t.name }

// EventOption sets attributes of an event being built.
type EventOption func(*event.Event)

// WithSubject sets the subject (aggregate id; the default partition key).
func WithSubject(s string) EventOption { return func(e *event.Event) { e.Subject = s } }

// WithKey sets the partition key.
func WithKey(k string) EventOption { return func(e *event.Event) { e.PartitionKey = k } }

// WithCorrelationID sets the correlation id.
func WithCorrelationID(id string) EventOption { return func(e *event.Event) { e.CorrelationID = id } }

// WithID sets the event id (default: a new UUIDv7). Publishing the same id
// twice within the dedup window stores it once.
func WithID(id string) EventOption { return func(e *event.Event) { e.ID = id } }

// WithSequence sets the aggregate version.
func WithSequence(n uint64) EventOption { return func(e *event.Event) { e.Sequence = n } }

// New builds an event of this type carrying v.
func (t EventType[T]) New(v T, opts ...EventOption) (*event.Event, error) {
	data, err := t.codec.Encode(v)
	if err != nil {
		return nil, fmt.Errorf("herald: encode %s: %w", t.name, err)
	}
	e := event.New(t.source, t.name, data)
	e.DataContentType = t.codec.ContentType()
	if r, ok := t.codec.(schemaRef); ok {
		e.DataSchema = r.DataSchema()
	}
	for _, o := range opts {
		o(e)
	}
	return e, nil
}

// Decode returns the payload of e as a T.
func (t EventType[T]) Decode(ctx context.Context, e *event.Event) (T, error) {
	v, err := t.codec.Decode(ctx, e.Data)
	if err != nil {
		return v, fmt.Errorf("herald: decode %s %s: %w", t.name, e.ID, err)
	}
	return v, nil
}

// Publish builds an event of this type carrying v and publishes it with c,
// to the type's topic if it has one.
func (t EventType[T]) Publish(ctx context.Context, c *Client, v T, opts ...EventOption) error {
	e, err := t.New(v, opts...)
	if err != nil {
		return err
	}
	if t.topic != "" {
		return c.PublishTo(ctx, t.topic, e)
	}
	return c.Publish(ctx, e)
}

// Handle registers fn on r for events of type t. A payload that does not
// decode as a T is a permanent failure: the event goes to the dead-letter
// queue at once.
func Handle[T any](r *consumer.Router, t EventType[T], fn func(ctx context.Context, v T, m *consumer.Message) error) {
	r.Handle(t.name, func(ctx context.Context, m *consumer.Message) error {
		v, err := t.Decode(ctx, m.Event)
		if err != nil {
			return consumer.Permanent(err)
		}
		return fn(ctx, v, m)
	})
}

// WithSchema makes the type's payloads schema-checked: c (built once at
// startup with serde.NewAvro, NewJSON or NewProtobuf, which registers or
// checks the schema and fails fast on an incompatible change) validates
// each value before it is published, so an invalid event never reaches
// the broker, and encodes it in the registry wire format; consumers decode
// by the schema id in the payload. The event's dataschema points at the
// schema in the registry.
func WithSchema[T any](c *serde.Codec[T]) TypeOption {
	return WithCodec[T](schemaCodec[T]{c})
}

type schemaCodec[T any] struct{ c *serde.Codec[T] }

func (s schemaCodec[T]) ContentType() string {
	switch s.c.Schema().Type {
	case schema.Avro:
		return "application/avro"
	case schema.Protobuf:
		return "application/protobuf"
	}
	return "application/json"
}

func (s schemaCodec[T]) DataSchema() string {
	return fmt.Sprintf("%s/schemas/ids/%d", s.c.Client().URL(), s.c.ID())
}

func (s schemaCodec[T]) Encode(v T) ([]byte, error) { return s.c.Encode(v) }

func (s schemaCodec[T]) Decode(ctx context.Context, data []byte) (T, error) {
	return s.c.Decode(ctx, data)
}
