package event

import (
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// SpecVersion is the CloudEvents specification version Herald speaks.
const SpecVersion = "1.0"

// Names of the CloudEvents extension attributes Herald gives meaning to.
const (
	ExtCorrelationID = "correlationid"
	ExtCausationID   = "causationid"
	ExtPartitionKey  = "partitionkey"
	ExtSequence      = "sequence"
	ExtTraceParent   = "traceparent"
	ExtTraceState    = "tracestate"
)

// ErrInvalid is wrapped by every validation and decoding error of this
// package, so callers can tell bad input from other failures with errors.Is.
var ErrInvalid = errors.New("invalid event")

// Event is a CloudEvents 1.0 event with Herald's extensions as fields.
//
// The zero value is not a valid event: ID, Source and Type are required (see
// [Event.Validate]). [New] fills ID (a UUIDv7) and Time.
//
// An Event is a plain value; it is not safe for concurrent mutation.
type Event struct {
	// ID identifies the event; with Source it is unique. Herald uses it as
	// the broker's deduplication id.
	ID string
	// Source names the producer, for example "orders" or "/shop/orders".
	Source string
	// Type says what happened, for example "shop.order.placed.v1".
	Type string
	// Subject is the aggregate the event is about (an order id...). It is
	// the default partition key.
	Subject string
	// Time is when the occurrence happened. Zero means unset.
	Time time.Time
	// DataContentType is the media type of Data, for example
	// "application/json" or "application/avro".
	DataContentType string
	// DataSchema references the schema of Data (a registry URI).
	DataSchema string
	// Data is the payload, carried unchanged.
	Data []byte

	// CorrelationID ties together every event of one business transaction.
	CorrelationID string
	// CausationID is the id of the event (or command) that caused this one.
	CausationID string
	// PartitionKey orders events: those with the same key are handled in
	// order. Empty means Subject (see [Event.Key]).
	PartitionKey string
	// Sequence is the aggregate version this event produced; 0 means unset.
	Sequence uint64
	// TraceParent and TraceState carry W3C trace context.
	TraceParent string
	TraceState  string

	// Extensions holds any other extension attributes, by lowercase name.
	// Values are carried as strings, as in binary content mode.
	Extensions map[string]string
}

// New returns an event with a fresh UUIDv7 id, the current time (UTC), and
// the given source, type and data.
func New(source, typ string, data []byte) *Event {
	return &Event{
		ID:     NewID(),
		Source: source,
		Type:   typ,
		Time:   time.Now().UTC(),
		Data:   data,
	}
}

// NewID returns a new UUIDv7 as a string. UUIDv7 ids sort by creation time.
func NewID() string {
	id, err := uuid.NewV7()
	if err != nil {
		// NewV7 fails only when the system's random source does; a random
		// v4 keeps ids unique in that unlikely case.
		return uuid.NewString()
	}
	return id.String()
}

// Key returns the ordering key: PartitionKey, or Subject when it is empty.
func (e *Event) Key() string {
	if e.PartitionKey != "" {
		return e.PartitionKey
	}
	return e.Subject
}

// Extension returns the value of any extension attribute by name, including
// those Herald keeps in fields ("correlationid", "sequence"...). The second
// result says whether it is set.
func (e *Event) Extension(name string) (string, bool) {
	switch name {
	case ExtCorrelationID:
		return e.CorrelationID, e.CorrelationID != ""
	case ExtCausationID:
		return e.CausationID, e.CausationID != ""
	case ExtPartitionKey:
		return e.PartitionKey, e.PartitionKey != ""
	case ExtSequence:
		if e.Sequence == 0 {
			return "", false
		}
		return strconv.FormatUint(e.Sequence, 10), true
	case ExtTraceParent:
		return e.TraceParent, e.TraceParent != ""
	case ExtTraceState:
		return e.TraceState, e.TraceState != ""
	}
	v, ok := e.Extensions[name]
	return v, ok
}

// SetExtension sets an extension attribute by name. Known names go to their
// fields. It returns an error for a name that is not lowercase ASCII letters
// and digits, for a reserved CloudEvents attribute name, or for a
// non-numeric "sequence".
func (e *Event) SetExtension(name, value string) error {
	if err := ValidateExtensionName(name); err != nil {
		return err
	}
	switch name {
	case ExtCorrelationID:
		e.CorrelationID = value
	case ExtCausationID:
		e.CausationID = value
	case ExtPartitionKey:
		e.PartitionKey = value
	case ExtSequence:
		if value == "" {
			e.Sequence = 0
			return nil
		}
		n, err := strconv.ParseUint(value, 10, 64)
		if err != nil {
			return fmt.Errorf("%w: extension %q: %q is not an unsigned integer", ErrInvalid, ExtSequence, value)
		}
		e.Sequence = n
	case ExtTraceParent:
		e.TraceParent = value
	case ExtTraceState:
		e.TraceState = value
	default:
		if e.Extensions == nil {
			e.Extensions = make(map[string]string, 2)
		}
		e.Extensions[name] = value
	}
	return nil
}

// Clone returns a deep copy of e.
func (e *Event) Clone() *Event {
	c := *e
	if e.Data != nil {
		c.Data = append([]byte(nil), e.Data...)
	}
	c.Extensions = maps.Clone(e.Extensions)
	return &c
}

// Validate reports the first problem that makes e an invalid CloudEvent, as
// an error wrapping [ErrInvalid] that names the attribute.
func (e *Event) Validate() error {
	switch {
	case e.ID == "":
		return fmt.Errorf("%w: attribute \"id\" is required", ErrInvalid)
	case e.Source == "":
		return fmt.Errorf("%w: attribute \"source\" is required", ErrInvalid)
	case e.Type == "":
		return fmt.Errorf("%w: attribute \"type\" is required", ErrInvalid)
	}
	for name := range e.Extensions {
		if err := ValidateExtensionName(name); err != nil {
			return err
		}
		if isKnownExtension(name) {
			return fmt.Errorf("%w: extension %q must be set through its field, not Extensions", ErrInvalid, name)
		}
	}
	return nil
}

// reserved are the CloudEvents context attribute names, which extensions
// must not reuse.
var reserved = map[string]bool{
	"id": true, "source": true, "specversion": true, "type": true,
	"datacontenttype": true, "dataschema": true, "subject": true, "time": true,
	"data": true, "data_base64": true,
}

func isKnownExtension(name string) bool {
	switch name {
	case ExtCorrelationID, ExtCausationID, ExtPartitionKey, ExtSequence, ExtTraceParent, ExtTraceState:
		return true
	}
	return false
}

// ValidateExtensionName reports whether name is a valid CloudEvents extension
// attribute name: 1 to 20 lowercase ASCII letters or digits, and not one of
// the core attribute names.
func ValidateExtensionName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: extension name is empty", ErrInvalid)
	}
	if len(name) > 20 {
		return fmt.Errorf("%w: extension name %q is longer than 20 characters", ErrInvalid, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return fmt.Errorf("%w: extension name %q: only lowercase ASCII letters and digits are allowed", ErrInvalid, name)
		}
	}
	if reserved[name] {
		return fmt.Errorf("%w: extension name %q is a core attribute", ErrInvalid, name)
	}
	return nil
}

// parseTime parses a CloudEvents time attribute (RFC 3339).
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(s))
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: attribute \"time\": %q is not an RFC 3339 timestamp", ErrInvalid, s)
	}
	return t, nil
}

// formatTime formats t as RFC 3339 with nanoseconds, as sdk-go does.
func formatTime(t time.Time) string {
	return t.Format(time.RFC3339Nano)
}
