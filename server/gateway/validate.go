package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"slices"

	havro "github.com/hamba/avro/v2"

	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/schema/avro"
	"github.com/heraldhq/herald/schema/jsonschema"
	"github.com/heraldhq/herald/schema/serde"
)

// validate checks each event against the registry: an event type that is
// a subject of the registry must carry a payload its schema accepts.
func (g *Gateway) validate(events []*event.Event) *Problem {
	if g.cfg.reg == nil {
		return nil
	}
	var bad []EventError
	for i, e := range events {
		if err := g.checkSchema(e); err != nil {
			var unavailable *registryError
			if errors.As(err, &unavailable) {
				return &Problem{Status: http.StatusServiceUnavailable, Detail: err.Error()}
			}
			bad = append(bad, EventError{Index: i, ID: e.ID, Detail: err.Error()})
		}
	}
	if bad != nil {
		return invalidEvents(len(events), bad)
	}
	return nil
}

// registryError is a registry failure that says nothing about the event.
type registryError struct{ err error }

func (e *registryError) Error() string { return "schema registry: " + e.err.Error() }
func (e *registryError) Unwrap() error { return e.err }

// checkSchema validates e's payload when its type has a schema (the
// registry subject named as the type). A payload in the registry wire
// format (magic byte 0, schema id) must name a schema of that subject and
// decode with it; a JSON payload without the frame is checked against the
// subject's latest JSON Schema.
func (g *Gateway) checkSchema(e *event.Event) error {
	latest, err := g.cfg.reg.Version(e.Type, schema.Latest, false)
	if err != nil {
		if errors.Is(err, schema.ErrSubjectNotFound) || errors.Is(err, schema.ErrVersionNotFound) {
			return nil // the type has no schema
		}
		return &registryError{err}
	}
	id, payload := latest.ID, e.Data
	if fid, rest, err := serde.ParseHeader(e.Data); err == nil {
		subjects, err := g.cfg.reg.SubjectsByID(fid, false)
		if err != nil && !errors.Is(err, schema.ErrSchemaNotFound) {
			return &registryError{err}
		}
		if !slices.Contains(subjects, e.Type) {
			return fmt.Errorf("payload names schema id %d, which is not a version of subject %q", fid, e.Type)
		}
		id, payload = fid, rest
	} else if latest.Schema.Type != schema.JSON {
		return fmt.Errorf("type %q has a %s schema (id %d): the payload must be in the registry wire format (magic byte 0, 4-byte schema id)", e.Type, latest.Schema.Type, latest.ID)
	}
	parsed, err := g.cfg.reg.Parsed(id)
	if err != nil {
		return &registryError{err}
	}
	switch s := parsed.(type) {
	case *jsonschema.Schema:
		if err := s.ValidateJSON(payload); err != nil {
			return fmt.Errorf("payload does not match schema id %d of subject %q: %v", id, e.Type, err)
		}
	case *avro.Schema:
		var v any
		if err := havro.Unmarshal(s.Avro(), payload, &v); err != nil {
			return fmt.Errorf("payload does not decode with Avro schema id %d of subject %q: %v", id, e.Type, err)
		}
	}
	// Protobuf payloads are checked for their schema id only.
	return nil
}
