package jsonschema

import (
	"bytes"
	"testing"

	sj "github.com/santhosh-tekuri/jsonschema/v6"
)

var fastSchemas = []string{
	`{"$schema":"https://json-schema.org/draft/2020-12/schema","properties":{"id":{"type":"string","minLength":1,"maxLength":8},"amount":{"type":"number","minimum":0,"exclusiveMaximum":1000},"n":{"type":"integer"},"tags":{"type":"array","items":{"type":"string","pattern":"^[a-z]+$"},"maxItems":3},"status":{"enum":["NEW","PAID",null]},"child":{"$ref":"#/$defs/C"}},"additionalProperties":false,"type":"object","required":["id","amount"],"$defs":{"C":{"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"]}}}`,
	`{"type":"object","properties":{"next":{"$ref":"#"},"v":{"type":["integer","null"]}},"additionalProperties":{"type":"string"}}`,
	`{"type":"array","items":{"type":"object","properties":{"a":{"const":"x"}}},"minItems":1}`,
}

func TestFastPathCoversGeneratedSchemas(t *testing.T) {
	t.Parallel()
	for i, text := range fastSchemas {
		s, err := Parse(text)
		if err != nil {
			t.Fatal(err)
		}
		if s.fast == nil {
			t.Fatalf("schema %d has no fast validator", i)
		}
	}
	s, _ := Parse(fastSchemas[0])
	for _, tc := range []struct {
		doc  string
		fast bool
	}{
		{`{"id":"a","amount":3}`, true},
		{`{"id":"a","amount":3,"n":4,"tags":["x","y"],"status":"PAID","child":{"ok":true}}`, true},
		{`{"id":"a","amount":0}`, false},       // on the bound: decided exactly by the full validator
		{`{"id":"a"}`, false},                  // missing required
		{`{"id":"a","amount":3,"x":1}`, false}, // closed
		{`{"id":"a","amount":3,"n":1.5}`, false},
		{`{"id":"a","amount":3,"tags":["A"]}`, false},
		{`{"id":"a","amount":3,"child":{}}`, false},
		{`{"id":"a","amount":3} x`, false},
	} {
		if got := s.fast.accepts([]byte(tc.doc)); got != tc.fast {
			t.Errorf("fast.accepts(%s) = %v, want %v", tc.doc, got, tc.fast)
		}
	}
	if err := s.ValidateJSON([]byte(`{"id":"a","amount":0}`)); err != nil {
		t.Fatalf("a value on an inclusive bound is valid: %v", err)
	}
	if s, _ := Parse(`{"anyOf":[{"type":"string"}]}`); s.fast != nil {
		t.Fatal("a schema with anyOf got a fast validator")
	}
}

// FuzzFastValidator checks the fast path never accepts what the full
// validator rejects.
func FuzzFastValidator(f *testing.F) {
	for _, d := range []string{`{"id":"a","amount":3}`, `{"next":{"next":{"v":null}},"z":"s"}`, `[{"a":"x"}]`, `{"id":"\u0041","amount":1e2}`, `[]`} {
		for i := range fastSchemas {
			f.Add(uint8(i), d)
		}
	}
	parsed := make([]*Schema, len(fastSchemas))
	for i, text := range fastSchemas {
		s, err := Parse(text)
		if err != nil {
			f.Fatal(err)
		}
		parsed[i] = s
	}
	f.Fuzz(func(t *testing.T, which uint8, doc string) {
		s := parsed[int(which)%len(parsed)]
		if !s.fast.accepts([]byte(doc)) {
			return
		}
		v, err := sj.UnmarshalJSON(bytes.NewReader([]byte(doc)))
		if err != nil {
			t.Fatalf("fast path accepted malformed JSON %q: %v", doc, err)
		}
		if err := s.root.Validate(v); err != nil {
			t.Fatalf("fast path accepted %q, full validator says %v", doc, err)
		}
	})
}
