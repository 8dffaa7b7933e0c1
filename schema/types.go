package schema

import (
	"fmt"
	"strings"

	"github.com/heraldhq/herald/schema/internal/compat"
)

// Type is a schema format as the Confluent API names it.
type Type string

// The supported schema types. The API omits schemaType for Avro.
const (
	Avro       Type = "AVRO"
	JSON       Type = "JSON"
	Protobuf   Type = "PROTOBUF"
	avroAPIKey      = ""
)

// Types lists the supported schema types in the order GET /schemas/types
// returns them.
var Types = []Type{JSON, Protobuf, Avro}

// ParseType returns the Type named s; "" means Avro, as in the API.
func ParseType(s string) (Type, error) {
	switch Type(strings.ToUpper(s)) {
	case avroAPIKey, Avro:
		return Avro, nil
	case JSON:
		return JSON, nil
	case Protobuf:
		return Protobuf, nil
	}
	return "", fmt.Errorf("schema: unknown schema type %q (want AVRO, JSON or PROTOBUF)", s)
}

// Level is a compatibility level.
type Level string

// The seven compatibility levels. BACKWARD: the new schema reads data
// written with the latest one; FORWARD: the latest reads data written with
// the new one; FULL: both. The _TRANSITIVE forms check every live version,
// newest first, instead of only the latest.
const (
	None               Level = "NONE"
	Backward           Level = "BACKWARD"
	BackwardTransitive Level = "BACKWARD_TRANSITIVE"
	Forward            Level = "FORWARD"
	ForwardTransitive  Level = "FORWARD_TRANSITIVE"
	Full               Level = "FULL"
	FullTransitive     Level = "FULL_TRANSITIVE"
)

// DefaultLevel is the global compatibility level of a new registry.
const DefaultLevel = Backward

// ParseLevel returns the Level named s (case-insensitive) or an
// ErrInvalidCompatibilityLevel error.
func ParseLevel(s string) (Level, error) {
	l := Level(strings.ToUpper(strings.TrimSpace(s)))
	switch l {
	case None, Backward, BackwardTransitive, Forward, ForwardTransitive, Full, FullTransitive:
		return l, nil
	}
	return "", newError(ErrInvalidCompatibilityLevel, "invalid compatibility level %q (want one of NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE)", s)
}

// backward reports whether the level needs the new schema to read old data.
func (l Level) backward() bool {
	return l == Backward || l == BackwardTransitive || l == Full || l == FullTransitive
}

// forward reports whether the level needs old schemas to read new data.
func (l Level) forward() bool {
	return l == Forward || l == ForwardTransitive || l == Full || l == FullTransitive
}

// transitive reports whether every live version is checked, not only the
// latest.
func (l Level) transitive() bool {
	return l == BackwardTransitive || l == ForwardTransitive || l == FullTransitive
}

// Mode says which writes a subject (or the registry) accepts.
type Mode string

// The modes. READWRITE is the default; READONLY refuses every write;
// IMPORT accepts schemas with their ids and versions given and skips
// compatibility checks, to copy another registry.
const (
	ReadWrite Mode = "READWRITE"
	ReadOnly  Mode = "READONLY"
	Import    Mode = "IMPORT"
)

// ParseMode returns the Mode named s or an ErrInvalidMode error.
func ParseMode(s string) (Mode, error) {
	m := Mode(strings.ToUpper(strings.TrimSpace(s)))
	switch m {
	case ReadWrite, ReadOnly, Import:
		return m, nil
	}
	return "", newError(ErrInvalidMode, "invalid mode %q (want READWRITE, READONLY or IMPORT)", s)
}

// Reference names another registered schema this one uses: Name is how
// the schema refers to it (an Avro full name, a JSON Schema $ref URL, a
// .proto import path), Subject and Version say where it is registered.
type Reference struct {
	Name    string `json:"name"`
	Subject string `json:"subject"`
	Version int    `json:"version"`
}

// Schema is a schema as submitted: its type, its text and its references.
type Schema struct {
	Type       Type        `json:"schemaType,omitempty"`
	Text       string      `json:"schema"`
	References []Reference `json:"references,omitempty"`
}

// SubjectVersion is one version of a subject.
type SubjectVersion struct {
	Subject string
	Version int
	ID      int
	Schema  Schema
	// Deleted is true when the version is soft-deleted.
	Deleted bool
}

// Incompatibility is one reason a schema is incompatible with a version.
type Incompatibility = compat.Incompatibility

// CheckResult is the outcome of a compatibility check.
type CheckResult struct {
	// Compatible is true when no incompatibility was found.
	Compatible bool
	// Messages holds one line per incompatibility, naming the version it
	// was found against:
	// `version 2 (FORWARD): field "total" removed without a default at Order.total`.
	Messages []string
}
