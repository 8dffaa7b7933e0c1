package serde

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"

	havro "github.com/hamba/avro/v2"
	invjs "github.com/invopop/jsonschema"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/schema/avro"
	"github.com/heraldhq/herald/schema/jsonschema"
	"github.com/heraldhq/herald/schema/protobuf"
)

// Errors callers branch on.
var (
	// ErrInvalid is returned (wrapped) by Encode for a value that does not
	// match the event type's schema; the message names the field and rule.
	ErrInvalid = errors.New("serde: event does not match its schema")
	// ErrIncompatible is returned (wrapped) by a constructor when the event
	// type's schema is incompatible with the versions registered under its
	// subject.
	ErrIncompatible = errors.New("serde: schema incompatible with the registered versions")
	// ErrUnregistered is returned (wrapped) by a constructor with
	// AutoRegister(false) when the schema is not registered.
	ErrUnregistered = errors.New("serde: schema not registered")
)

type options struct {
	autoRegister bool
	normalize    bool
	refs         []schema.Reference
}

// Option configures a Codec.
type Option func(*options)

// AutoRegister says whether a constructor registers the schema (true, the
// default: a compatible new schema becomes a new version) or only checks
// that it is already registered (false: an unregistered schema is
// ErrUnregistered, with the compatibility verdict in the message).
func AutoRegister(on bool) Option { return func(o *options) { o.autoRegister = on } }

// Normalize registers and looks up the schema in its normal form. Default
// false.
func Normalize(on bool) Option { return func(o *options) { o.normalize = on } }

// WithReferences declares the registered schemas this schema refers to.
// Default none.
func WithReferences(refs ...schema.Reference) Option {
	return func(o *options) { o.refs = append(o.refs, refs...) }
}

// Codec encodes values of an event type T into the Confluent wire format
// under a registered schema and decodes payloads written with any schema
// of the subject, by the id they carry. It is safe for concurrent use.
//
// A Codec is built once per event type at startup (NewAvro, NewJSON,
// NewProtobuf): that registers the type's schema, or checks it, and fails
// fast on an incompatible change.
type Codec[T any] struct {
	client  *Client
	subject string
	typ     schema.Type
	id      int
	sch     schema.Schema
	prefix  []byte // header (and protobuf indexes) for this codec's id

	encode  func(dst []byte, v *T) ([]byte, error)
	decoder func(ctx context.Context, id int, s schema.Schema) (func(payload []byte, v *T) error, error)

	mu      sync.RWMutex
	readers map[int]func(payload []byte, v *T) error
}

// ID returns the registry id of the codec's schema.
func (c *Codec[T]) ID() int { return c.id }

// Client returns the registry client the codec was built with.
func (c *Codec[T]) Client() *Client { return c.client }

// Subject returns the subject the codec's schema is registered under.
func (c *Codec[T]) Subject() string { return c.subject }

// Schema returns the codec's schema.
func (c *Codec[T]) Schema() schema.Schema { return c.sch }

// Encode validates v against the schema and returns it in the wire format.
// An invalid v is an ErrInvalid error naming the field and rule.
func (c *Codec[T]) Encode(v T) ([]byte, error) { return c.AppendEncode(nil, v) }

// AppendEncode is Encode appending to dst.
func (c *Codec[T]) AppendEncode(dst []byte, v T) ([]byte, error) {
	out, err := c.encode(dst, &v)
	if err != nil {
		return dst, fmt.Errorf("%w: subject %q (schema id %d): %w", ErrInvalid, c.subject, c.id, err)
	}
	return out, nil
}

// Decode reads a payload in the wire format, written with any schema the
// registry knows, into a T.
func (c *Codec[T]) Decode(ctx context.Context, data []byte) (T, error) {
	var v T
	err := c.DecodeInto(ctx, data, &v)
	return v, err
}

// DecodeInto is Decode into v.
func (c *Codec[T]) DecodeInto(ctx context.Context, data []byte, v *T) error {
	id, payload, err := ParseHeader(data)
	if err != nil {
		return err
	}
	c.mu.RLock()
	read, ok := c.readers[id]
	c.mu.RUnlock()
	if !ok {
		s, err := c.client.SchemaByID(ctx, id)
		if err != nil {
			return fmt.Errorf("serde: subject %q: payload schema id %d: %w", c.subject, id, err)
		}
		if s.Type != c.typ {
			return fmt.Errorf("serde: subject %q: payload schema id %d is %s, not %s", c.subject, id, s.Type, c.typ)
		}
		if read, err = c.decoder(ctx, id, s); err != nil {
			return fmt.Errorf("serde: subject %q: payload schema id %d: %w", c.subject, id, err)
		}
		c.mu.Lock()
		c.readers[id] = read
		c.mu.Unlock()
	}
	if err := read(payload, v); err != nil {
		return fmt.Errorf("serde: subject %q: decode payload written with schema id %d: %w", c.subject, id, err)
	}
	return nil
}

// setup registers or checks s under subject and returns its id.
func setup(ctx context.Context, cl *Client, subject string, s schema.Schema, o options) (int, error) {
	if cl == nil {
		return 0, errors.New("serde: nil registry client")
	}
	if err := schema.ValidateSubject(subject); err != nil {
		return 0, fmt.Errorf("serde: %w", err)
	}
	if o.autoRegister {
		id, err := cl.Register(ctx, subject, s, o.normalize)
		if errors.Is(err, schema.ErrIncompatible) {
			return 0, fmt.Errorf("%w: subject %q: %w", ErrIncompatible, subject, err)
		}
		if err != nil {
			return 0, fmt.Errorf("serde: register schema under subject %q: %w", subject, err)
		}
		return id, nil
	}
	sv, err := cl.Lookup(ctx, subject, s, o.normalize)
	if err == nil {
		return sv.ID, nil
	}
	if !errors.Is(err, schema.ErrSubjectNotFound) && !errors.Is(err, schema.ErrSchemaNotFound) {
		return 0, fmt.Errorf("serde: look up schema under subject %q: %w", subject, err)
	}
	res, cerr := cl.Check(ctx, subject, schema.CheckAll, s)
	if cerr == nil && !res.Compatible {
		return 0, fmt.Errorf("%w: subject %q: %s", ErrIncompatible, subject, strings.Join(res.Messages, "; "))
	}
	return 0, fmt.Errorf("%w: subject %q has no version with this schema and auto-registration is off", ErrUnregistered, subject)
}

func newCodec[T any](ctx context.Context, cl *Client, subject string, s schema.Schema, o options) (*Codec[T], error) {
	id, err := setup(ctx, cl, subject, s, o)
	if err != nil {
		return nil, err
	}
	return &Codec[T]{client: cl, subject: subject, typ: s.Type, id: id, sch: s,
		prefix: AppendHeader(nil, id), readers: map[int]func([]byte, *T) error{}}, nil
}

func buildOptions(opts []Option) options {
	o := options{autoRegister: true}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// ---- Avro

var avroWriters = sync.Pool{New: func() any { return havro.NewWriter(nil, 512) }}

// NewAvro returns a codec for T (a struct with `avro:"name"` field tags, or
// a map[string]any) under the Avro schema text, registered (or checked)
// under subject.
func NewAvro[T any](ctx context.Context, cl *Client, subject, text string, opts ...Option) (*Codec[T], error) {
	o := buildOptions(opts)
	s := schema.Schema{Type: schema.Avro, Text: text, References: o.refs}
	parsed, err := parseWith(ctx, cl, s)
	if err != nil {
		return nil, err
	}
	own := parsed.(*avro.Schema).Avro()
	c, err := newCodec[T](ctx, cl, subject, s, o)
	if err != nil {
		return nil, err
	}
	c.encode = func(dst []byte, v *T) ([]byte, error) {
		w := avroWriters.Get().(*havro.Writer)
		w.Reset(nil)
		w.Error = nil
		_, _ = w.Write(c.prefix)
		w.WriteVal(own, v)
		err := w.Error
		if err == nil {
			dst = append(dst, w.Buffer()...)
		}
		w.Error = nil
		avroWriters.Put(w)
		return dst, err
	}
	c.decoder = func(ctx context.Context, id int, ws schema.Schema) (func([]byte, *T) error, error) {
		rs := own
		if id != c.id {
			wp, err := parseWith(ctx, cl, ws)
			if err != nil {
				return nil, err
			}
			if rs, err = havro.NewSchemaCompatibility().Resolve(own, wp.(*avro.Schema).Avro()); err != nil {
				return nil, fmt.Errorf("cannot read it with the codec's schema: %w", err)
			}
		}
		return func(payload []byte, v *T) error { return havro.Unmarshal(rs, payload, v) }, nil
	}
	c.readers[c.id], _ = c.decoder(ctx, c.id, s)
	return c, nil
}

func parseWith(ctx context.Context, cl *Client, s schema.Schema) (schema.Parsed, error) {
	if cl == nil {
		return nil, errors.New("serde: nil registry client")
	}
	p, err := cl.Parse(ctx, s)
	if err != nil {
		return nil, fmt.Errorf("serde: %w", err)
	}
	return p, nil
}

// ---- JSON Schema

// JSONSchemaFor returns the JSON Schema of T's JSON encoding, generated by
// github.com/invopop/jsonschema: properties from the json tags, every
// field without omitempty required, no additional properties.
func JSONSchemaFor[T any]() (string, error) {
	r := &invjs.Reflector{ExpandedStruct: true}
	var zero T
	t := reflect.TypeOf(&zero).Elem()
	js := r.ReflectFromType(t)
	b, err := json.Marshal(js)
	if err != nil {
		return "", fmt.Errorf("serde: JSON Schema for %s: %w", t, err)
	}
	return string(b), nil
}

// NewJSON returns a codec for T encoded with encoding/json, under the JSON
// Schema generated from T (see JSONSchemaFor), registered (or checked)
// under subject. Encode validates every value against the schema.
func NewJSON[T any](ctx context.Context, cl *Client, subject string, opts ...Option) (*Codec[T], error) {
	text, err := JSONSchemaFor[T]()
	if err != nil {
		return nil, err
	}
	return NewJSONWithSchema[T](ctx, cl, subject, text, opts...)
}

// NewJSONWithSchema is NewJSON with a schema written by hand.
func NewJSONWithSchema[T any](ctx context.Context, cl *Client, subject, text string, opts ...Option) (*Codec[T], error) {
	o := buildOptions(opts)
	s := schema.Schema{Type: schema.JSON, Text: text, References: o.refs}
	parsed, err := parseWith(ctx, cl, s)
	if err != nil {
		return nil, err
	}
	own := parsed.(*jsonschema.Schema)
	c, err := newCodec[T](ctx, cl, subject, s, o)
	if err != nil {
		return nil, err
	}
	c.encode = func(dst []byte, v *T) ([]byte, error) {
		b, err := json.Marshal(v)
		if err != nil {
			return dst, err
		}
		if err := own.ValidateJSON(b); err != nil {
			return dst, err
		}
		dst = append(dst, c.prefix...)
		return append(dst, b...), nil
	}
	c.decoder = func(context.Context, int, schema.Schema) (func([]byte, *T) error, error) {
		return func(payload []byte, v *T) error { return json.Unmarshal(payload, v) }, nil
	}
	c.readers[c.id], _ = c.decoder(ctx, c.id, s)
	return c, nil
}

// ---- Protobuf

// NewProtobuf returns a codec for the message type of template (a
// generated message, or a *dynamicpb.Message), whose full name must be a
// message of the .proto schema text, registered (or checked) under
// subject. Payloads carry the message's index path after the id.
func NewProtobuf[T proto.Message](ctx context.Context, cl *Client, subject, text string, template T, opts ...Option) (*Codec[T], error) {
	o := buildOptions(opts)
	s := schema.Schema{Type: schema.Protobuf, Text: text, References: o.refs}
	parsed, err := parseWith(ctx, cl, s)
	if err != nil {
		return nil, err
	}
	ps := parsed.(*protobuf.Schema)
	want := template.ProtoReflect().Descriptor()
	md, err := ps.Message(string(want.FullName()))
	if err != nil {
		return nil, fmt.Errorf("serde: schema for subject %q: %w", subject, err)
	}
	c, err := newCodec[T](ctx, cl, subject, s, o)
	if err != nil {
		return nil, err
	}
	c.prefix = AppendIndexes(c.prefix, protobuf.Indexes(md))
	c.encode = func(dst []byte, v *T) ([]byte, error) {
		m := (*v).ProtoReflect()
		if got := m.Descriptor().FullName(); got != want.FullName() {
			return dst, fmt.Errorf("message %s is not %s", got, want.FullName())
		}
		if err := proto.CheckInitialized(*v); err != nil {
			return dst, err
		}
		if err := noUnknown(m); err != nil {
			return dst, err
		}
		dst = append(dst, c.prefix...)
		return proto.MarshalOptions{}.MarshalAppend(dst, *v)
	}
	c.decoder = func(ctx context.Context, id int, ws schema.Schema) (func([]byte, *T) error, error) {
		wp, err := parseWith(ctx, cl, ws)
		if err != nil {
			return nil, err
		}
		wps := wp.(*protobuf.Schema)
		return func(payload []byte, v *T) error {
			idx, rest, err := ParseIndexes(payload)
			if err != nil {
				return err
			}
			wmd, err := wps.ByIndexes(idx)
			if err != nil {
				return err
			}
			if wmd.FullName() != want.FullName() {
				return fmt.Errorf("payload holds %s, not %s", wmd.FullName(), want.FullName())
			}
			m := template.ProtoReflect().New().Interface().(T)
			if err := proto.Unmarshal(rest, m); err != nil {
				return err
			}
			*v = m
			return nil
		}, nil
	}
	return c, nil
}

// noUnknown refuses a message carrying fields its schema does not define.
func noUnknown(m protoreflect.Message) error {
	if len(m.GetUnknown()) > 0 {
		return fmt.Errorf("message %s carries fields its schema does not define", m.Descriptor().FullName())
	}
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len() && err == nil; i++ {
				err = noUnknown(l.Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				err = noUnknown(mv.Message())
				return err == nil
			})
		case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
			err = noUnknown(v.Message())
		}
		return err == nil
	})
	return err
}
