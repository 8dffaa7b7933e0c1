package postgres

import (
	"encoding/json"
	"errors"
	"fmt"
)

// storedAttrs is an event's attribute headers as stored in the attrs column
// (jsonb). It scans the column's text itself: jsonb prints a flat object
// of strings ({"ce-id": "…", "ce-type": "…"}), which it reads without
// encoding/json unless a string has an escape (then it falls back to
// encoding/json for the whole object).
type storedAttrs map[string]string

// ScanBytes implements pgtype.BytesScanner: v is the column's JSON text,
// valid only during the call.
func (a *storedAttrs) ScanBytes(v []byte) error {
	if v == nil {
		return errors.New("attrs is NULL")
	}
	if m, ok := flatStrings(v); ok {
		*a = m
		return nil
	}
	var m map[string]string
	if err := json.Unmarshal(v, &m); err != nil {
		return fmt.Errorf("attrs: %w", err)
	}
	*a = m
	return nil
}

// flatStrings reads a JSON object whose members are all strings without
// escapes; ok is false for anything else.
func flatStrings(b []byte) (m map[string]string, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	m = make(map[string]string, 10)
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return m, skipSpace(b, i+1) == len(b)
	}
	for {
		k, j, ok := plainString(b, i)
		if !ok {
			return nil, false
		}
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return nil, false
		}
		v, j, ok := plainString(b, skipSpace(b, i+1))
		if !ok {
			return nil, false
		}
		m[k] = v
		i = skipSpace(b, j)
		if i >= len(b) {
			return nil, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return m, skipSpace(b, i+1) == len(b)
		default:
			return nil, false
		}
	}
}

// plainString reads the JSON string at b[i] if it has no escapes and no
// control characters, and returns it and the index after it.
func plainString(b []byte, i int) (string, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return "", 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return string(b[i+1 : j]), j + 1, true
		case c == '\\' || c < 0x20:
			return "", 0, false
		}
	}
	return "", 0, false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}
