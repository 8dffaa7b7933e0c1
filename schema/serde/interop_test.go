package serde_test

import (
	"fmt"
	"testing"

	havro "github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/heraldhq/herald/schema/serde"
)

// TestWireFormatInterop checks Herald's framing against franz-go's
// implementation of the Confluent wire format, both ways.
func TestWireFormatInterop(t *testing.T) {
	t.Parallel()
	var h sr.ConfluentHeader
	for _, tc := range []struct {
		id  int
		idx []int
	}{{1, nil}, {70000, []int{0}}, {3, []int{1}}, {3, []int{2, 0, 5}}} {
		ours := serde.AppendHeader(nil, tc.id)
		if tc.idx != nil {
			ours = serde.AppendIndexes(ours, tc.idx)
		}
		theirs, err := h.AppendEncode(nil, tc.id, tc.idx)
		if err != nil {
			t.Fatal(err)
		}
		if string(ours) != string(theirs) {
			t.Fatalf("id %d index %v: ours % x, franz-go % x", tc.id, tc.idx, ours, theirs)
		}
		id, rest, err := h.DecodeID(ours)
		if err != nil || id != tc.id {
			t.Fatalf("franz-go reads id %d, %v from ours", id, err)
		}
		if tc.idx != nil {
			idx, _, err := h.DecodeIndex(rest, 16)
			if err != nil || fmt.Sprint(idx) != fmt.Sprint(tc.idx) {
				t.Fatalf("franz-go reads index %v, %v; want %v", idx, err, tc.idx)
			}
		}
	}
}

// TestFranzGoSerdeReadsHeraldEvents decodes a Herald-encoded Avro event with
// franz-go's Serde and encodes one with it for Herald to decode, over one
// registry id.
func TestFranzGoSerdeReadsHeraldEvents(t *testing.T) {
	t.Parallel()
	cl, _, _ := start(t)
	ctx := t.Context()
	c, err := serde.NewAvro[orderV1](ctx, cl, "interop-value", avroV1)
	if err != nil {
		t.Fatal(err)
	}
	sch := havro.MustParse(avroV1)
	var s sr.Serde
	s.Register(c.ID(), orderV1{},
		sr.EncodeFn(func(v any) ([]byte, error) { return havro.Marshal(sch, v) }),
		sr.DecodeFn(func(b []byte, v any) error { return havro.Unmarshal(sch, b, v) }))

	data, err := c.Encode(orderV1{ID: "o-7", Total: 70})
	if err != nil {
		t.Fatal(err)
	}
	var got orderV1
	if err := s.Decode(data, &got); err != nil || got != (orderV1{ID: "o-7", Total: 70}) {
		t.Fatalf("franz-go decoding Herald's event = %+v, %v", got, err)
	}
	theirs, err := s.Encode(orderV1{ID: "o-8", Total: 80})
	if err != nil {
		t.Fatal(err)
	}
	back, err := c.Decode(ctx, theirs)
	if err != nil || back != (orderV1{ID: "o-8", Total: 80}) {
		t.Fatalf("Herald decoding franz-go's event = %+v, %v", back, err)
	}
}
