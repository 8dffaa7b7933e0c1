package serde_test

import (
	"encoding/json"
	"testing"

	havro "github.com/hamba/avro/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/heraldhq/herald/schema/protobuf"
	"github.com/heraldhq/herald/schema/serde"
)

// The serde figures sit beside the raw codec (the baseline) so the
// overhead of framing, validation and the id lookup is read off one run.

func BenchmarkFraming(b *testing.B) {
	payload := make([]byte, 64)
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = append(serde.AppendHeader(buf[:0], 12345), payload...)
		if _, _, err := serde.ParseHeader(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAvro(b *testing.B) {
	cl, _, _ := start(b)
	c, err := serde.NewAvro[orderV2](b.Context(), cl, "bench-avro", avroV2)
	if err != nil {
		b.Fatal(err)
	}
	v := orderV2{ID: "order-0001", Total: 129900, Currency: "EUR"}
	raw := havro.MustParse(avroV2)
	data, _ := c.Encode(v)
	rawData, _ := havro.Marshal(raw, v)
	b.Run("raw-encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := havro.Marshal(raw, v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("serde-encode", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 64)
		for b.Loop() {
			var err error
			if buf, err = c.AppendEncode(buf[:0], v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw-decode", func(b *testing.B) {
		b.ReportAllocs()
		var out orderV2
		for b.Loop() {
			if err := havro.Unmarshal(raw, rawData, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("serde-decode", func(b *testing.B) {
		b.ReportAllocs()
		var out orderV2
		for b.Loop() {
			if err := c.DecodeInto(b.Context(), data, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkJSON(b *testing.B) {
	cl, _, _ := start(b)
	c, err := serde.NewJSON[payment](b.Context(), cl, "bench-json")
	if err != nil {
		b.Fatal(err)
	}
	v := payment{ID: "pay-0001", Amount: 1299.5, Note: "card"}
	data, _ := c.Encode(v)
	b.Run("raw-encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(&v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("serde-encode-validated", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 128)
		for b.Loop() {
			var err error
			if buf, err = c.AppendEncode(buf[:0], v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw-decode", func(b *testing.B) {
		b.ReportAllocs()
		var out payment
		for b.Loop() {
			if err := json.Unmarshal(data[5:], &out); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("serde-decode", func(b *testing.B) {
		b.ReportAllocs()
		var out payment
		for b.Loop() {
			if err := c.DecodeInto(b.Context(), data, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkProtobuf(b *testing.B) {
	cl, _, _ := start(b)
	ps, err := protobuf.Parse(protoText)
	if err != nil {
		b.Fatal(err)
	}
	md, _ := ps.Message("Order")
	c, err := serde.NewProtobuf(b.Context(), cl, "bench-proto", protoText, dynamicpb.NewMessage(md))
	if err != nil {
		b.Fatal(err)
	}
	m := dynamicpb.NewMessage(md)
	m.Set(md.Fields().ByName("id"), protoreflect.ValueOfString("order-0001"))
	m.Set(md.Fields().ByName("total"), protoreflect.ValueOfInt64(129900))
	data, _ := c.Encode(m)
	rawData, _ := proto.Marshal(m)
	b.Run("raw-encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := proto.Marshal(m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("serde-encode", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 64)
		for b.Loop() {
			var err error
			if buf, err = c.AppendEncode(buf[:0], m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw-decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			out := dynamicpb.NewMessage(md)
			if err := proto.Unmarshal(rawData, out); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("serde-decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Decode(b.Context(), data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
