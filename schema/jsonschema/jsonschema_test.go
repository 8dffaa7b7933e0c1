package jsonschema_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/schema/internal/compat"
	"github.com/heraldhq/herald/schema/jsonschema"
)

func TestValidateNamesFieldAndRule(t *testing.T) {
	t.Parallel()
	s, err := jsonschema.Parse(`{"type":"object","properties":{"total":{"type":"number","minimum":0}},"required":["total"]}`)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ValidateJSON([]byte(`{"total":3}`)); err != nil {
		t.Fatalf("valid document: %v", err)
	}
	err = s.ValidateJSON([]byte(`{"total":"three"}`))
	if err == nil || !strings.Contains(err.Error(), "at /total") || !strings.Contains(err.Error(), "string") {
		t.Fatalf("invalid document: err = %v, want the field and the rule", err)
	}
	if err := s.ValidateJSON([]byte(`{}`)); err == nil || !strings.Contains(err.Error(), "total") {
		t.Fatalf("missing required: err = %v", err)
	}
}

func TestExternalReferences(t *testing.T) {
	t.Parallel()
	ref := jsonschema.Ref{Name: "customer.json", Text: `{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}`}
	s, err := jsonschema.Parse(`{"type":"object","properties":{"customer":{"$ref":"customer.json"}}}`, ref)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if err := s.ValidateJSON([]byte(`{"customer":{}}`)); err == nil {
		t.Fatal("the referenced schema's required property was not enforced")
	}
	if _, err := jsonschema.Parse(`{"$ref":"http://example.com/remote.json"}`); err == nil {
		t.Fatal("a remote $ref was resolved; nothing may be loaded from outside")
	}
}

func TestCheckStopsWhenContextEnds(t *testing.T) {
	t.Parallel()
	s, err := jsonschema.Parse(`{"type":"object","properties":{"a":{"$ref":"#"},"b":{"$ref":"#"}}}`)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	if _, err := jsonschema.Check(ctx, s, s, compat.ReaderIsNew); err == nil {
		t.Fatal("Check did not report the ended context")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`true`, `{}`, `{"type":"string","maxLength":3}`,
		`{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"],"additionalProperties":false}`,
		`{"anyOf":[{"type":"string"},{"type":"null"}]}`,
		`{"type":"array","items":[{"type":"string"}],"additionalItems":false}`,
		`{"$schema":"https://json-schema.org/draft/2020-12/schema","prefixItems":[{"const":1}]}`,
		`{"definitions":{"n":{"properties":{"next":{"$ref":"#/definitions/n"}}}},"$ref":"#/definitions/n"}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		s, err := jsonschema.Parse(text)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		incs, err := jsonschema.Check(ctx, s, s, compat.ReaderIsNew)
		if err != nil {
			return // out of time is allowed; a panic is not
		}
		if len(incs) != 0 {
			t.Fatalf("schema %s incompatible with itself: %v", text, incs)
		}
	})
}
