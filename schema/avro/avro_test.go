package avro_test

import (
	"testing"

	"github.com/heraldhq/herald/schema/avro"
	"github.com/heraldhq/herald/schema/internal/compat"
)

func TestParseWithReferences(t *testing.T) {
	t.Parallel()
	ref := avro.Ref{Name: "shop.Money", Text: `{"type":"record","name":"Money","namespace":"shop","fields":[{"name":"cents","type":"long"}]}`}
	s, err := avro.Parse(`{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"total","type":"Money"}]}`, ref)
	if err != nil {
		t.Fatalf("Parse with reference: %v", err)
	}
	if got := s.Canonical(); got != `{"name":"shop.Order","type":"record","fields":[{"name":"total","type":{"name":"shop.Money","type":"record","fields":[{"name":"cents","type":"long"}]}}]}` {
		t.Fatalf("Canonical = %s", got)
	}
	// A fresh cache per parse: the name is unknown without the reference.
	if _, err := avro.Parse(`{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"total","type":"Money"}]}`); err == nil {
		t.Fatal("Parse without the reference succeeded; names leaked between parses")
	}
}

func TestCheckReportsEveryIncompatibility(t *testing.T) {
	t.Parallel()
	old, _ := avro.Parse(`{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"string"}]}`)
	nw, _ := avro.Parse(`{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"b","type":"int"},{"name":"c","type":"int"}]}`)
	incs := avro.Check(nw, old, compat.ReaderIsNew)
	if len(incs) != 3 {
		t.Fatalf("incompatibilities = %v, want 3 (a, b, c)", incs)
	}
	want := []string{`type changed from "int" to "string" at R.a`, `type changed from "string" to "int" at R.b`, `field "c" added without a default at R.c`}
	for i, w := range want {
		if incs[i].String() != w {
			t.Errorf("incompatibility %d = %q, want %q", i, incs[i], w)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`"int"`, `["null","string"]`,
		`{"type":"record","name":"R","fields":[{"name":"a","type":"int","default":1}]}`,
		`{"type":"enum","name":"E","symbols":["A","B"],"default":"A"}`,
		`{"type":"fixed","name":"F","size":4}`,
		`{"type":"array","items":{"type":"map","values":"long"}}`,
		`{"type":"record","name":"N","fields":[{"name":"next","type":["null","N"]}]}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		s, err := avro.Parse(text)
		if err != nil {
			return
		}
		// Any schema reads its own data.
		if incs := avro.Check(s, s, compat.ReaderIsNew); len(incs) != 0 {
			t.Fatalf("schema %s incompatible with itself: %v", text, incs)
		}
	})
}
