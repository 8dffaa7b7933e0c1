package event

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ContentTypeJSON is the media type of a structured-mode JSON CloudEvent.
const ContentTypeJSON = "application/cloudevents+json"

// IsStructured reports whether a message content type denotes a
// structured-mode JSON CloudEvent (application/cloudevents+json, with or
// without parameters such as charset).
func IsStructured(ct string) bool {
	if ct == "" {
		return false
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		mt = strings.ToLower(strings.TrimSpace(ct))
	}
	return mt == ContentTypeJSON
}

// IsJSONContentType reports whether a datacontenttype denotes JSON
// ("application/json", "text/json" or any "+json" suffix). An empty type
// counts as JSON, as the CloudEvents JSON format specifies.
func IsJSONContentType(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		mt = strings.ToLower(strings.TrimSpace(ct))
	}
	return mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}

// MarshalJSON encodes e in structured mode (application/cloudevents+json).
// JSON data (see [IsJSONContentType]) is embedded as "data" when it is valid
// JSON; other data goes to "data_base64".
func MarshalJSON(e *Event) ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.WriteByte('{')
	field := func(name, value string) {
		if buf.Len() > 1 {
			buf.WriteByte(',')
		}
		writeJSONString(&buf, name)
		buf.WriteByte(':')
		writeJSONString(&buf, value)
	}
	field("specversion", SpecVersion)
	field("id", e.ID)
	field("source", e.Source)
	field("type", e.Type)
	if e.Subject != "" {
		field("subject", e.Subject)
	}
	if !e.Time.IsZero() {
		field("time", formatTime(e.Time))
	}
	if e.DataContentType != "" {
		field("datacontenttype", e.DataContentType)
	}
	if e.DataSchema != "" {
		field("dataschema", e.DataSchema)
	}
	names := make([]string, 0, 6+len(e.Extensions))
	for _, n := range []string{ExtCorrelationID, ExtCausationID, ExtPartitionKey, ExtSequence, ExtTraceParent, ExtTraceState} {
		if _, ok := e.Extension(n); ok {
			names = append(names, n)
		}
	}
	for n := range e.Extensions {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		v, _ := e.Extension(n)
		field(n, v)
	}
	if e.Data != nil {
		if IsJSONContentType(e.DataContentType) && json.Valid(e.Data) {
			buf.WriteString(`,"data":`)
			if err := json.Compact(&buf, e.Data); err != nil {
				return nil, fmt.Errorf("event %s: compact data: %w", e.ID, err)
			}
		} else {
			field("data_base64", base64.StdEncoding.EncodeToString(e.Data))
		}
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

func writeJSONString(buf *bytes.Buffer, s string) {
	b, _ := json.Marshal(s) // marshaling a string cannot fail
	buf.Write(b)
}

// UnmarshalJSON decodes a structured-mode JSON CloudEvent. Extension values
// that are JSON numbers or booleans are kept as their text. Every error wraps
// [ErrInvalid] and says what is wrong.
func UnmarshalJSON(b []byte) (*Event, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%w: structured JSON: %v", ErrInvalid, err)
	}
	if raw == nil {
		return nil, fmt.Errorf("%w: structured JSON: expected an object", ErrInvalid)
	}
	return UnmarshalJSONObject(raw)
}

// UnmarshalJSONObject decodes a structured-mode JSON CloudEvent whose
// members were decoded already: raw holds each member's JSON value, valid
// JSON as a decoder returns it. It is [UnmarshalJSON] for a reader that
// decodes many events from one document (a JSON batch) in one pass. The
// event's data may share memory with raw.
func UnmarshalJSONObject(raw map[string]json.RawMessage) (*Event, error) {
	e := &Event{}
	str := func(name string) (string, error) {
		v, ok := raw[name]
		if !ok {
			return "", nil
		}
		s, ok := jsonString(v)
		if !ok {
			return "", fmt.Errorf("%w: attribute %q must be a string", ErrInvalid, name)
		}
		return s, nil
	}
	spec, err := str("specversion")
	if err != nil {
		return nil, err
	}
	if spec != SpecVersion {
		if spec == "" {
			return nil, fmt.Errorf("%w: attribute \"specversion\" is required", ErrInvalid)
		}
		return nil, fmt.Errorf("%w: specversion %q is not supported (want %q)", ErrInvalid, spec, SpecVersion)
	}
	for _, a := range []struct {
		name string
		dst  *string
	}{
		{"id", &e.ID}, {"source", &e.Source}, {"type", &e.Type}, {"subject", &e.Subject},
		{"datacontenttype", &e.DataContentType}, {"dataschema", &e.DataSchema},
	} {
		if *a.dst, err = str(a.name); err != nil {
			return nil, err
		}
	}
	ts, err := str("time")
	if err != nil {
		return nil, err
	}
	if ts != "" {
		if e.Time, err = parseTime(ts); err != nil {
			return nil, err
		}
	}
	for name, v := range raw {
		if reserved[name] {
			continue
		}
		val, err := extensionValue(name, v)
		if err != nil {
			return nil, err
		}
		if err := e.SetExtension(name, val); err != nil {
			return nil, err
		}
	}
	data, hasData := raw["data"]
	b64, hasB64 := raw["data_base64"]
	switch {
	case hasData && hasB64:
		return nil, fmt.Errorf("%w: both \"data\" and \"data_base64\" are present", ErrInvalid)
	case hasB64:
		var s string
		if err := json.Unmarshal(b64, &s); err != nil {
			return nil, fmt.Errorf("%w: \"data_base64\" must be a string", ErrInvalid)
		}
		if e.Data, err = base64.StdEncoding.DecodeString(s); err != nil {
			return nil, fmt.Errorf("%w: \"data_base64\": %v", ErrInvalid, err)
		}
	case hasData && !bytes.Equal(bytes.TrimSpace(data), []byte("null")):
		if IsJSONContentType(e.DataContentType) {
			e.Data = data
			break
		}
		// Non-JSON data in "data" is a JSON string holding the text.
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return nil, fmt.Errorf("%w: \"data\" with datacontenttype %q must be a JSON string", ErrInvalid, e.DataContentType)
		}
		e.Data = []byte(s)
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return e, nil
}

// jsonString returns the string a valid JSON value holds, and false if it
// is not a string. Strings without escapes, the common case, are taken as
// they are.
func jsonString(v json.RawMessage) (string, bool) {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		in := v[1 : len(v)-1]
		if bytes.IndexByte(in, '\\') < 0 && utf8.Valid(in) {
			return string(in), true
		}
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", false
	}
	return s, true
}

func extensionValue(name string, v json.RawMessage) (string, error) {
	if s, ok := jsonString(v); ok {
		return s, nil
	}
	var x any
	d := json.NewDecoder(bytes.NewReader(v))
	d.UseNumber()
	if err := d.Decode(&x); err != nil {
		return "", fmt.Errorf("%w: extension %q: %v", ErrInvalid, name, err)
	}
	switch t := x.(type) {
	case string:
		return t, nil
	case json.Number:
		return t.String(), nil
	case bool:
		return strconv.FormatBool(t), nil
	default:
		return "", fmt.Errorf("%w: extension %q must be a string, number or boolean", ErrInvalid, name)
	}
}
