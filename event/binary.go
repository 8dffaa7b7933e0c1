package event

import (
	"fmt"
	"strconv"
	"strings"
)

// Binding is a CloudEvents protocol binding for binary content mode: how
// attributes are named when they travel as message headers.
//
// Use the predefined [NATS], [Kafka] and [AMQP] bindings.
type Binding struct {
	name string
	// prefix of attribute headers, exactly as written.
	prefix string
	// contentType is the header that carries datacontenttype on write.
	contentType string
	// altPrefix is also accepted on read ("" for none).
	altPrefix string
	// altContentType is also accepted for datacontenttype on read.
	altContentType string

	// Precomputed header names, so encoding allocates no strings.
	kSpec, kID, kSource, kType, kSubject, kTime, kSchema string
	kCorr, kCaus, kPKey, kSeq, kTP, kTS                  string
}

func newBinding(name, prefix, contentType, altPrefix, altContentType string) Binding {
	return Binding{
		name: name, prefix: prefix, contentType: contentType,
		altPrefix: altPrefix, altContentType: altContentType,
		kSpec: prefix + "specversion", kID: prefix + "id", kSource: prefix + "source",
		kType: prefix + "type", kSubject: prefix + "subject", kTime: prefix + "time",
		kSchema: prefix + "dataschema",
		kCorr:   prefix + ExtCorrelationID, kCaus: prefix + ExtCausationID,
		kPKey: prefix + ExtPartitionKey, kSeq: prefix + ExtSequence,
		kTP: prefix + ExtTraceParent, kTS: prefix + ExtTraceState,
	}
}

// The bindings Herald speaks.
var (
	// NATS: lowercase "ce-" headers, datacontenttype as "ce-datacontenttype"
	// (as sdk-go's nats_jetstream protocol writes it); "content-type" is
	// accepted on read.
	NATS = newBinding("nats", "ce-", "ce-datacontenttype", "", "content-type")
	// Kafka: "ce_" headers, datacontenttype as "content-type";
	// "ce_datacontenttype" is accepted on read.
	Kafka = newBinding("kafka", "ce_", "content-type", "", "ce_datacontenttype")
	// AMQP: "cloudEvents_" application properties, datacontenttype as
	// "content-type" (adapters map it to the AMQP content-type property);
	// the "cloudEvents:" prefix is accepted on read.
	AMQP = newBinding("amqp", "cloudEvents_", "content-type", "cloudEvents:", "cloudEvents_datacontenttype")
)

// String returns the binding's name: "nats", "kafka" or "amqp".
func (b Binding) String() string { return b.name }

// IsEvent reports whether headers carry a binary-mode CloudEvent under this
// binding (they have a specversion attribute).
func (b Binding) IsEvent(h map[string]string) bool {
	if _, ok := h[b.kSpec]; ok {
		return true
	}
	if b.altPrefix != "" {
		_, ok := h[b.altPrefix+"specversion"]
		return ok
	}
	return false
}

// Encode writes e's attributes into h as binary-mode headers; the payload is
// e.Data, unchanged. It writes datacontenttype under one header name only.
// Encode does not validate e; call [Event.Validate] first where the event
// comes from outside.
func (b Binding) Encode(e *Event, h map[string]string) {
	h[b.kSpec] = SpecVersion
	h[b.kID] = e.ID
	h[b.kSource] = e.Source
	h[b.kType] = e.Type
	if e.Subject != "" {
		h[b.kSubject] = e.Subject
	}
	if !e.Time.IsZero() {
		h[b.kTime] = formatTime(e.Time)
	}
	if e.DataContentType != "" {
		h[b.contentType] = e.DataContentType
	}
	if e.DataSchema != "" {
		h[b.kSchema] = e.DataSchema
	}
	if e.CorrelationID != "" {
		h[b.kCorr] = e.CorrelationID
	}
	if e.CausationID != "" {
		h[b.kCaus] = e.CausationID
	}
	if e.PartitionKey != "" {
		h[b.kPKey] = e.PartitionKey
	}
	if e.Sequence != 0 {
		h[b.kSeq] = strconv.FormatUint(e.Sequence, 10)
	}
	if e.TraceParent != "" {
		h[b.kTP] = e.TraceParent
	}
	if e.TraceState != "" {
		h[b.kTS] = e.TraceState
	}
	for k, v := range e.Extensions {
		h[b.prefix+k] = v
	}
}

// HeaderCount returns how many headers [Binding.Encode] writes for e, to
// size maps.
func (b Binding) HeaderCount(e *Event) int {
	n := 4 + len(e.Extensions)
	for _, s := range [...]string{e.Subject, e.DataContentType, e.DataSchema, e.CorrelationID,
		e.CausationID, e.PartitionKey, e.TraceParent, e.TraceState} {
		if s != "" {
			n++
		}
	}
	if !e.Time.IsZero() {
		n++
	}
	if e.Sequence != 0 {
		n++
	}
	return n
}

// Decode reads a binary-mode event from headers h and payload data. Headers
// that are not CloudEvents attributes are ignored. data is referenced, not
// copied. A message without attribute headers whose content type is
// application/cloudevents+json is a structured-mode event: Decode reads it
// from data with [UnmarshalJSON], as the protocol bindings require of
// receivers. Every error wraps [ErrInvalid] and names the offending header.
func (b Binding) Decode(h map[string]string, data []byte) (*Event, error) {
	return b.DecodeInto(&Event{}, h, data)
}

// DecodeInto is [Binding.Decode] into e, which it overwrites, so that a
// caller can keep the event inside a value of its own instead of
// allocating it. It returns e, or nil and the error; on error e holds
// what was read so far.
func (b Binding) DecodeInto(e *Event, h map[string]string, data []byte) (*Event, error) {
	*e = Event{Data: data}
	var spec string
	for k, v := range h {
		var name string
		switch {
		case k == b.contentType || k == b.altContentType:
			e.DataContentType = v
			continue
		case hasPrefixFold(k, b.prefix):
			name = k[len(b.prefix):]
		case b.altPrefix != "" && hasPrefixFold(k, b.altPrefix):
			name = k[len(b.altPrefix):]
		default:
			continue
		}
		name = strings.ToLower(name)
		switch name {
		case "specversion":
			spec = v
		case "id":
			e.ID = v
		case "source":
			e.Source = v
		case "type":
			e.Type = v
		case "subject":
			e.Subject = v
		case "time":
			t, err := parseTime(v)
			if err != nil {
				return nil, fmt.Errorf("header %q: %w", k, err)
			}
			e.Time = t
		case "datacontenttype":
			e.DataContentType = v
		case "dataschema":
			e.DataSchema = v
		default:
			if err := e.SetExtension(name, v); err != nil {
				return nil, fmt.Errorf("header %q: %w", k, err)
			}
		}
	}
	if spec == "" {
		if IsStructured(e.DataContentType) {
			ev, err := UnmarshalJSON(data)
			if err != nil {
				return nil, fmt.Errorf("structured-mode message (content type %q): %w", e.DataContentType, err)
			}
			*e = *ev
			return e, nil
		}
		return nil, fmt.Errorf("%w: no %q header: not a binary-mode CloudEvent", ErrInvalid, b.kSpec)
	}
	if spec != SpecVersion {
		return nil, fmt.Errorf("%w: specversion %q is not supported (want %q)", ErrInvalid, spec, SpecVersion)
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return e, nil
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
