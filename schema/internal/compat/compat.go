// Package compat holds the types the format checkers (avro, jsonschema,
// protobuf) share with the registry core.
package compat

import "strings"

// Incompatibility is one reason data written with one schema cannot be read
// with another.
type Incompatibility struct {
	// Path locates the offending element inside the schema
	// ("Order.total", "/properties/total", "shop.Order.total").
	Path string
	// Message says what is wrong, in words that name the element
	// (`field "total" removed without a default`).
	Message string
}

// String returns "message at path".
func (i Incompatibility) String() string {
	if i.Path == "" {
		return i.Message
	}
	return i.Message + " at " + i.Path
}

// Ref is a referenced schema a parser may need to resolve names: Name is
// how the referring schema names it (an Avro full name, a JSON Schema URL,
// a .proto import path), Text is the referenced schema.
type Ref struct {
	Name string
	Text string
}

// Direction tells a checker which of the two schemas is the newer one. It
// changes only the wording ("added" or "removed").
type Direction bool

const (
	// ReaderIsNew means the newer schema reads data written with the older
	// one (a BACKWARD check).
	ReaderIsNew Direction = true
	// ReaderIsOld means the older schema reads data written with the newer
	// one (a FORWARD check).
	ReaderIsOld Direction = false
)

// Verb returns "added" when an element present only in the reader was
// added (the reader is new) and "removed" otherwise.
func (d Direction) Verb(onlyInReader bool) string {
	if onlyInReader == bool(d) {
		return "added"
	}
	return "removed"
}

// Join joins path elements with sep, skipping empty ones.
func Join(sep string, parts ...string) string {
	var b strings.Builder
	for _, p := range parts {
		if p == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(sep)
		}
		b.WriteString(p)
	}
	return b.String()
}
