package protobuf_test

import (
	"slices"
	"testing"

	"github.com/heraldhq/herald/schema/internal/compat"
	"github.com/heraldhq/herald/schema/protobuf"
)

const shop = `syntax = "proto3";
package shop;
import "google/protobuf/timestamp.proto";
import "money.proto";
message Order {
  message Line { string sku = 1; Money price = 2; }
  repeated Line lines = 1;
  google.protobuf.Timestamp at = 2;
}
message Refund { string order_id = 1; }
`

func TestMessageIndexes(t *testing.T) {
	t.Parallel()
	s, err := protobuf.Parse(shop, protobuf.Ref{Name: "money.proto", Text: `syntax = "proto3"; package shop; message Money { int64 cents = 1; }`})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	for _, tc := range []struct {
		name string
		idx  []int
	}{{"shop.Order", []int{0}}, {"Order.Line", []int{0, 0}}, {"Refund", []int{1}}} {
		md, err := s.Message(tc.name)
		if err != nil {
			t.Fatalf("Message(%q): %v", tc.name, err)
		}
		if got := protobuf.Indexes(md); !slices.Equal(got, tc.idx) {
			t.Fatalf("Indexes(%s) = %v, want %v", tc.name, got, tc.idx)
		}
		back, err := s.ByIndexes(tc.idx)
		if err != nil || back.FullName() != md.FullName() {
			t.Fatalf("ByIndexes(%v) = %v, %v", tc.idx, back, err)
		}
	}
	if _, err := s.ByIndexes([]int{5}); err == nil {
		t.Fatal("ByIndexes([5]) found a message")
	}
	if _, err := protobuf.Parse(shop); err == nil {
		t.Fatal("Parse without the imported file succeeded")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`syntax = "proto3"; message M { string a = 1; }`,
		`syntax = "proto2"; message M { required int32 a = 1; optional M next = 2; }`,
		`syntax = "proto3"; package p; enum E { A = 0; } message M { oneof o { E e = 1; bytes b = 2; } map<string, M> m = 3; }`,
		shop,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		s, err := protobuf.Parse(text)
		if err != nil {
			return
		}
		if incs := protobuf.Check(s, s, compat.ReaderIsNew); len(incs) != 0 {
			t.Fatalf("schema %q incompatible with itself: %v", text, incs)
		}
	})
}
