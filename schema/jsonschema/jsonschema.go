// Package jsonschema parses JSON Schemas for the registry, validates
// documents against them, and checks whether every document one schema
// accepts is accepted by another, with the registry's (Confluent's)
// semantics: open and closed content models (additionalProperties),
// tightened versus loosened constraints (types, enums, lengths, ranges,
// patterns, required properties, array items), and combinators
// (allOf, anyOf, oneOf, not).
//
// Parsing and validation use github.com/santhosh-tekuri/jsonschema/v6.
// Schemas without $schema are read as draft-07, as Confluent does. Nothing
// is loaded from the network or the file system: a $ref outside the schema
// must name one of its references.
package jsonschema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	sj "github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/heraldhq/herald/schema/internal/compat"
)

// Schema is a compiled JSON Schema. It is immutable and safe for
// concurrent use.
type Schema struct {
	root *sj.Schema
	text string
	fast *fast // nil when the schema uses keywords the fast path does not cover
}

const baseURL = "herald:///schema.json"

// refLoader serves references by name: a $ref URL matches a reference
// whose name is the URL, or its last path segments.
type refLoader struct{ refs []compat.Ref }

// Load implements sj.URLLoader.
func (l refLoader) Load(url string) (any, error) {
	for _, r := range l.refs {
		if url == r.Name || strings.HasSuffix(url, "/"+strings.TrimPrefix(r.Name, "/")) {
			doc, err := sj.UnmarshalJSON(strings.NewReader(r.Text))
			if err != nil {
				return nil, fmt.Errorf("reference %q: %w", r.Name, err)
			}
			return doc, nil
		}
	}
	return nil, fmt.Errorf("$ref %q is neither inside the schema nor one of its references", url)
}

// Parse compiles text, resolving external $refs from refs.
func Parse(text string, refs ...Ref) (*Schema, error) {
	doc, err := sj.UnmarshalJSON(strings.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("jsonschema: %w", err)
	}
	switch doc.(type) {
	case map[string]any, bool:
	default:
		return nil, fmt.Errorf("jsonschema: a schema is an object or a boolean, not %T", doc)
	}
	c := sj.NewCompiler()
	c.DefaultDraft(sj.Draft7)
	loader := refLoader{refs: refs}
	c.UseLoader(sj.SchemeURLLoader{"herald": loader, "http": loader, "https": loader, "file": loader, "urn": loader})
	if err := c.AddResource(baseURL, doc); err != nil {
		return nil, fmt.Errorf("jsonschema: %w", err)
	}
	root, err := compile(c)
	if err != nil {
		return nil, fmt.Errorf("jsonschema: %w", err)
	}
	return &Schema{root: root, text: text, fast: compileFast(root)}, nil
}

// compile turns the compiler's panics on hostile input into errors.
func compile(c *sj.Compiler) (s *sj.Schema, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("cannot compile schema: %v", p)
		}
	}()
	return c.Compile(baseURL)
}

// Text returns the schema text as given to Parse.
func (s *Schema) Text() string { return s.text }

// Compiled returns the compiled santhosh-tekuri/jsonschema schema.
func (s *Schema) Compiled() *sj.Schema { return s.root }

// Validate checks a decoded JSON value (as decoded by encoding/json with
// UseNumber, or by ValidateJSON) against the schema. The error names each
// failing location and rule.
func (s *Schema) Validate(v any) error {
	if err := s.root.Validate(v); err != nil {
		var ve *sj.ValidationError
		if errors.As(err, &ve) {
			return &ValidationError{Causes: flatten(ve)}
		}
		return err
	}
	return nil
}

// ValidateJSON validates a JSON document. Documents of common schemas are
// accepted without decoding them; anything else, and every invalid
// document, goes through the full validator.
func (s *Schema) ValidateJSON(data []byte) error {
	if s.fast != nil && s.fast.accepts(data) {
		return nil
	}
	v, err := sj.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("jsonschema: payload is not JSON: %w", err)
	}
	return s.Validate(v)
}

// ValidationError lists why a document is invalid, one line per failed
// rule: "at /total: got string, want number".
type ValidationError struct {
	Causes []string
}

// Error joins the causes.
func (e *ValidationError) Error() string {
	return "invalid document: " + strings.Join(e.Causes, "; ")
}

var printer = message.NewPrinter(language.English)

func flatten(ve *sj.ValidationError) []string {
	var out []string
	var walk func(e *sj.ValidationError)
	walk = func(e *sj.ValidationError) {
		if len(e.Causes) == 0 {
			loc := "/" + strings.Join(e.InstanceLocation, "/")
			rule := strings.Join(e.ErrorKind.KeywordPath(), "/")
			msg := e.ErrorKind.LocalizedString(printer)
			if rule != "" && !strings.HasPrefix(msg, rule) {
				msg = rule + ": " + msg
			}
			out = append(out, fmt.Sprintf("at %s: %s", loc, msg))
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	return out
}

// Normalize returns text without insignificant whitespace; with deep, also
// with object keys sorted, so that two spellings of one schema compare
// equal.
func Normalize(text string, deep bool) string {
	if deep {
		var v any
		d := json.NewDecoder(strings.NewReader(text))
		d.UseNumber()
		if d.Decode(&v) == nil {
			if b, err := json.Marshal(v); err == nil {
				return string(b)
			}
		}
	}
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(text)); err != nil {
		return strings.TrimSpace(text)
	}
	return b.String()
}

// Ref is a referenced schema: Name is how the schema refers to it, Text
// its source.
type Ref = compat.Ref

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
