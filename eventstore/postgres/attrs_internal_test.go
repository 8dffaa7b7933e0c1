package postgres

import (
	"encoding/json"
	"maps"
	"testing"
)

// The fast reader of the attrs column agrees with encoding/json, and
// leaves what it does not read plainly (escapes, other value types, bad
// JSON) to it.
func TestStoredAttrsAgreeWithEncodingJSON(t *testing.T) {
	for _, in := range []string{
		`{}`,
		` { } `,
		`{"ce-id": "0193", "ce-type": "shop.order.placed.v1", "ce-source": "shop/orders", "ce-time": "2026-12-04T21:00:00.123456789Z"}`,
		`{"a":"b","c":"d"}`,
		"{\n\t\"a\" :\r\n \"b\" }",
		`{"ce-subject": "Zürich – 東京"}`,
		`{"ce-subject": "quote \" inside"}`,
		`{"ce-subject": "back\\slash", "x": "\u00e9"}`,
		`{"a": "b", "a": "c"}`,
	} {
		var want map[string]string
		if err := json.Unmarshal([]byte(in), &want); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		var got storedAttrs
		if err := got.ScanBytes([]byte(in)); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if !maps.Equal(map[string]string(got), want) {
			t.Errorf("%s: got %v, want %v", in, got, want)
		}
	}
	for _, in := range []string{``, `null`, `[]`, `{"a": 1}`, `{"a": "b",}`, `{"a": "b"} x`, `{"a" "b"}`, `{"a": "b"`, `{"a": "unterminated}`, "{\"a\": \"ctl\x01\"}"} {
		var got storedAttrs
		if err := got.ScanBytes([]byte(in)); err == nil && in != `null` {
			t.Errorf("%q: read as %v, want an error", in, got)
		}
	}
}
