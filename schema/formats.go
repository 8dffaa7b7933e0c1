package schema

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/heraldhq/herald/schema/avro"
	"github.com/heraldhq/herald/schema/internal/compat"
	"github.com/heraldhq/herald/schema/jsonschema"
	"github.com/heraldhq/herald/schema/protobuf"
)

// Parsed is a parsed schema: *avro.Schema, *jsonschema.Schema or
// *protobuf.Schema depending on its Type.
type Parsed any

// Parse parses text as a schema of type t, resolving references from refs
// (ordered so that each comes after the ones it uses). It returns an
// ErrInvalidSchema error for bad input.
func Parse(t Type, text string, refs ...compat.Ref) (Parsed, error) {
	var (
		p   Parsed
		err error
	)
	switch t {
	case Avro, "":
		p, err = avro.Parse(text, refs...)
	case JSON:
		p, err = jsonschema.Parse(text, refs...)
	case Protobuf:
		p, err = protobuf.Parse(text, refs...)
	default:
		return nil, newError(ErrInvalidSchema, "unknown schema type %q", t)
	}
	if err != nil {
		return nil, &Error{Code: ErrInvalidSchema.Code, Message: "invalid schema: " + err.Error(), Err: err}
	}
	return p, nil
}

// normalize returns the form of text two submissions of one schema share:
// JSON without insignificant whitespace (and, with deep, the format's own
// normal form), or the trimmed .proto text.
func normalize(t Type, text string, deep bool) string {
	switch t {
	case Avro, "":
		if deep {
			if s, err := avro.Parse(text); err == nil {
				return s.Canonical()
			}
		}
		return avro.Normalize(text)
	case JSON:
		return jsonschema.Normalize(text, deep)
	case Protobuf:
		return protobuf.Normalize(text)
	}
	return text
}

// fingerprint identifies a schema by its type, normalized text and
// references: two submissions with one fingerprint get one id.
func fingerprint(t Type, normalized string, refs []Reference) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", t, normalized)
	for _, r := range refs {
		fmt.Fprintf(h, "%s\x00%s\x00%d\x00", r.Name, r.Subject, r.Version)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// check returns why data written with writer cannot be read with reader.
func check(ctx context.Context, t Type, reader, writer Parsed, dir compat.Direction) ([]Incompatibility, error) {
	switch t {
	case Avro, "":
		return avro.Check(reader.(*avro.Schema), writer.(*avro.Schema), dir), nil
	case JSON:
		return jsonschema.Check(ctx, reader.(*jsonschema.Schema), writer.(*jsonschema.Schema), dir)
	case Protobuf:
		return protobuf.Check(reader.(*protobuf.Schema), writer.(*protobuf.Schema), dir), nil
	}
	return nil, fmt.Errorf("schema: unknown schema type %q", t)
}

// Compare returns how next relates to prev: backward lists why next cannot
// read data written with prev, forward why prev cannot read data written
// with next. Both schemas must be of type t.
func Compare(ctx context.Context, t Type, prev, next Parsed) (backward, forward []Incompatibility, err error) {
	if backward, err = check(ctx, t, next, prev, compat.ReaderIsNew); err != nil {
		return nil, nil, err
	}
	if forward, err = check(ctx, t, prev, next, compat.ReaderIsOld); err != nil {
		return nil, nil, err
	}
	return backward, forward, nil
}
