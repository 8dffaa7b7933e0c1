package serde_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/schema/protobuf"
	"github.com/heraldhq/herald/schema/serde"
	"github.com/heraldhq/herald/server/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start serves a fresh registry and returns a client for it and a counter
// of GET /schemas/ids requests.
func start(t testing.TB) (*serde.Client, *schema.Registry, *atomic.Int64) {
	t.Helper()
	reg, err := schema.New(context.Background(), schema.NewMemoryStore())
	if err != nil {
		t.Fatal(err)
	}
	h := registry.NewHandler(reg)
	var byID atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/schemas/ids/") {
			byID.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		srv.Close()
		_ = reg.Close()
	})
	cl, err := serde.NewClient(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return cl, reg, &byID
}

type orderV1 struct {
	ID    string `avro:"id"`
	Total int64  `avro:"total"`
}

type orderV2 struct {
	ID       string `avro:"id"`
	Total    int64  `avro:"total"`
	Currency string `avro:"currency"`
}

const avroV1 = `{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"},{"name":"total","type":"long"}]}`
const avroV2 = `{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"},{"name":"total","type":"long"},{"name":"currency","type":"string","default":"EUR"}]}`

func TestAvroCodec(t *testing.T) {
	t.Parallel()
	cl, _, byID := start(t)
	ctx := t.Context()
	v1, err := serde.NewAvro[orderV1](ctx, cl, "orders-value", avroV1)
	if err != nil {
		t.Fatalf("NewAvro v1: %v", err)
	}
	data, err := v1.Encode(orderV1{ID: "o-1", Total: 1250})
	if err != nil {
		t.Fatal(err)
	}
	if data[0] != serde.Magic || int(data[4]) != v1.ID() {
		t.Fatalf("header = % x, want magic 0 and id %d", data[:5], v1.ID())
	}
	got, err := v1.Decode(ctx, data)
	if err != nil || got != (orderV1{ID: "o-1", Total: 1250}) {
		t.Fatalf("Decode = %+v, %v", got, err)
	}

	// A newer consumer (another service, its own client) reads old events
	// by their id, filling the default.
	cl2, err := serde.NewClient(cl.URL())
	if err != nil {
		t.Fatal(err)
	}
	v2, err := serde.NewAvro[orderV2](ctx, cl2, "orders-value", avroV2)
	if err != nil {
		t.Fatalf("NewAvro v2: %v", err)
	}
	if v2.ID() == v1.ID() {
		t.Fatal("v2 got v1's id")
	}
	before := byID.Load()
	for range 3 {
		old, err := v2.Decode(ctx, data)
		if err != nil || old != (orderV2{ID: "o-1", Total: 1250, Currency: "EUR"}) {
			t.Fatalf("v2 decoding a v1 event = %+v, %v", old, err)
		}
	}
	if n := byID.Load() - before; n != 1 {
		t.Fatalf("%d schema-by-id requests for three decodes, want 1 (cached)", n)
	}

	// An old consumer reads new events too (FULL in practice).
	newData, err := v2.Encode(orderV2{ID: "o-2", Total: 5, Currency: "USD"})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := v1.Decode(ctx, newData); err != nil || got.ID != "o-2" {
		t.Fatalf("v1 decoding a v2 event = %+v, %v", got, err)
	}

	// A value that does not match is refused before it leaves.
	type wrong struct {
		ID string `avro:"id"`
	}
	bad, err := serde.NewAvro[wrong](ctx, cl, "orders-value", avroV1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Encode(wrong{ID: "x"}); !errors.Is(err, serde.ErrInvalid) || !strings.Contains(err.Error(), "total") {
		t.Fatalf("Encode of a value missing a field: err = %v, want ErrInvalid naming total", err)
	}
	if _, err := v1.Decode(ctx, []byte{1, 2, 3}); !errors.Is(err, serde.ErrNotFramed) {
		t.Fatalf("Decode of garbage: err = %v", err)
	}
	if _, err := v1.Decode(ctx, serde.AppendHeader(nil, 4242)); !errors.Is(err, schema.ErrSchemaNotFound) {
		t.Fatalf("Decode with an unknown id: err = %v", err)
	}
}

func TestStartupFailsFastOnIncompatibleChange(t *testing.T) {
	t.Parallel()
	cl, reg, _ := start(t)
	ctx := t.Context()
	if _, err := serde.NewAvro[orderV1](ctx, cl, "pay-value", avroV1); err != nil {
		t.Fatal(err)
	}
	if err := reg.SetConfig(ctx, "pay-value", schema.Forward); err != nil {
		t.Fatal(err)
	}
	dropped := `{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"}]}`
	type slim struct {
		ID string `avro:"id"`
	}
	_, err := serde.NewAvro[slim](ctx, cl, "pay-value", dropped)
	if !errors.Is(err, serde.ErrIncompatible) || !strings.Contains(err.Error(), `field "total" removed without a default`) {
		t.Fatalf("incompatible schema at startup: err = %v, want ErrIncompatible naming the field", err)
	}
	_, err = serde.NewAvro[slim](ctx, cl, "pay-value", dropped, serde.AutoRegister(false))
	if !errors.Is(err, serde.ErrIncompatible) || !strings.Contains(err.Error(), "version 1") {
		t.Fatalf("check-only, incompatible: err = %v", err)
	}
	_, err = serde.NewAvro[orderV2](ctx, cl, "pay-value", avroV2, serde.AutoRegister(false))
	if !errors.Is(err, serde.ErrUnregistered) {
		t.Fatalf("check-only, compatible but unregistered: err = %v", err)
	}
	c, err := serde.NewAvro[orderV1](ctx, cl, "pay-value", avroV1, serde.AutoRegister(false))
	if err != nil || c.ID() <= 0 {
		t.Fatalf("check-only, registered: %v", err)
	}
}

type payment struct {
	ID     string  `json:"id"`
	Amount float64 `json:"amount" jsonschema:"minimum=0"`
	Note   string  `json:"note,omitempty" jsonschema:"maxLength=10"`
}

func TestJSONCodec(t *testing.T) {
	t.Parallel()
	cl, _, _ := start(t)
	ctx := t.Context()
	c, err := serde.NewJSON[payment](ctx, cl, "payments-value")
	if err != nil {
		t.Fatalf("NewJSON: %v", err)
	}
	if !strings.Contains(c.Schema().Text, `"required":["id","amount"]`) {
		t.Fatalf("generated schema %s does not require id and amount", c.Schema().Text)
	}
	data, err := c.Encode(payment{ID: "p-1", Amount: 9.5})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data[5:], []byte(`{"id":"p-1","amount":9.5}`)) {
		t.Fatalf("payload = %q", data[5:])
	}
	got, err := c.Decode(ctx, data)
	if err != nil || got != (payment{ID: "p-1", Amount: 9.5}) {
		t.Fatalf("Decode = %+v, %v", got, err)
	}
	_, err = c.Encode(payment{ID: "p-2", Amount: -1})
	if !errors.Is(err, serde.ErrInvalid) || !strings.Contains(err.Error(), "at /amount") || !strings.Contains(err.Error(), "minimum") {
		t.Fatalf("negative amount: err = %v, want ErrInvalid naming /amount and minimum", err)
	}
	_, err = c.Encode(payment{ID: "p-3", Note: "far too long a note"})
	if !errors.Is(err, serde.ErrInvalid) || !strings.Contains(err.Error(), "at /note") {
		t.Fatalf("long note: err = %v", err)
	}
}

const protoText = `syntax = "proto2";
package shop;
message Order {
  required string id = 1;
  optional int64 total = 2;
}
message Refund {
  message Line { optional string sku = 1; }
  required string order_id = 1;
  repeated Line lines = 2;
}
`

func TestProtobufCodec(t *testing.T) {
	t.Parallel()
	cl, _, _ := start(t)
	ctx := t.Context()
	ps, err := protobuf.Parse(protoText)
	if err != nil {
		t.Fatal(err)
	}
	md, _ := ps.Message("Refund")
	template := dynamicpb.NewMessage(md)
	c, err := serde.NewProtobuf(ctx, cl, "refunds-value", protoText, template)
	if err != nil {
		t.Fatalf("NewProtobuf: %v", err)
	}
	m := dynamicpb.NewMessage(md)
	m.Set(md.Fields().ByName("order_id"), protoreflect.ValueOfString("o-1"))
	lines := m.Mutable(md.Fields().ByName("lines")).List()
	line := lines.NewElement()
	line.Message().Set(md.Messages().ByName("Line").Fields().ByName("sku"), protoreflect.ValueOfString("sku-9"))
	lines.Append(line)
	data, err := c.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	idx, _, err := serde.ParseIndexes(data[5:])
	if err != nil || len(idx) != 1 || idx[0] != 1 {
		t.Fatalf("message indexes = %v, %v; want [1] (Refund is the second message)", idx, err)
	}
	got, err := c.Decode(ctx, data)
	if err != nil || got.Get(md.Fields().ByName("order_id")).String() != "o-1" || got.Get(md.Fields().ByName("lines")).List().Len() != 1 {
		t.Fatalf("Decode = %v, %v", got, err)
	}
	empty := dynamicpb.NewMessage(md)
	if _, err := c.Encode(empty); !errors.Is(err, serde.ErrInvalid) || !strings.Contains(err.Error(), "order_id") {
		t.Fatalf("missing required field: err = %v", err)
	}
	orderMD, _ := ps.Message("Order")
	if _, err := c.Encode(dynamicpb.NewMessage(orderMD)); !errors.Is(err, serde.ErrInvalid) {
		t.Fatalf("wrong message type: err = %v", err)
	}
}

func TestWireFormat(t *testing.T) {
	t.Parallel()
	for _, idx := range [][]int{{0}, {1}, {0, 2}, {3, 1, 4}} {
		b := serde.AppendIndexes(serde.AppendHeader(nil, 513), idx)
		id, rest, err := serde.ParseHeader(b)
		if err != nil || id != 513 {
			t.Fatalf("ParseHeader = %d, %v", id, err)
		}
		got, rest, err := serde.ParseIndexes(rest)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(idx) || len(rest) != 0 {
			t.Fatalf("ParseIndexes(%v) = %v, %v, rest %d", idx, got, err, len(rest))
		}
	}
	if b := serde.AppendIndexes(nil, []int{0}); !bytes.Equal(b, []byte{0}) {
		t.Fatalf("[0] encodes as % x, want 00", b)
	}
	for _, bad := range [][]byte{nil, {0, 0, 0}, {1, 0, 0, 0, 1}, {0, 0, 0, 0, 0}, {0, 0xff, 0xff, 0xff, 0xff}} {
		if _, _, err := serde.ParseHeader(bad); !errors.Is(err, serde.ErrNotFramed) {
			t.Fatalf("ParseHeader(% x): err = %v", bad, err)
		}
	}
}

func FuzzParseFrame(f *testing.F) {
	f.Add(serde.AppendIndexes(serde.AppendHeader(nil, 7), []int{2, 1}))
	f.Add([]byte{0, 0, 0, 0, 1, 0})
	f.Add([]byte{0, 0, 0, 0, 1, 0x7f, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, rest, err := serde.ParseHeader(b)
		if err != nil {
			return
		}
		if id <= 0 || len(rest) != len(b)-serde.HeaderSize {
			t.Fatalf("ParseHeader(% x) = %d, rest %d", b, id, len(rest))
		}
		idx, _, err := serde.ParseIndexes(rest)
		if err != nil {
			return
		}
		// What parses re-encodes to something that parses the same.
		again, _, err := serde.ParseIndexes(serde.AppendIndexes(nil, idx))
		if err != nil || fmt.Sprint(again) != fmt.Sprint(idx) {
			t.Fatalf("indexes %v re-parse as %v, %v", idx, again, err)
		}
	})
}

// FuzzDecode feeds arbitrary payloads to codecs of each format: an error,
// never a panic.
func FuzzDecode(f *testing.F) {
	cl, _, _ := start(f)
	ctx := context.Background()
	av, err := serde.NewAvro[orderV2](ctx, cl, "fuzz-avro", avroV2)
	if err != nil {
		f.Fatal(err)
	}
	js, err := serde.NewJSON[payment](ctx, cl, "fuzz-json")
	if err != nil {
		f.Fatal(err)
	}
	ps, err := protobuf.Parse(protoText)
	if err != nil {
		f.Fatal(err)
	}
	md, _ := ps.Message("Refund")
	pb, err := serde.NewProtobuf(ctx, cl, "fuzz-proto", protoText, dynamicpb.NewMessage(md))
	if err != nil {
		f.Fatal(err)
	}
	a, _ := av.Encode(orderV2{ID: "x", Total: 1, Currency: "EUR"})
	j, _ := js.Encode(payment{ID: "p", Amount: 1})
	m := dynamicpb.NewMessage(md)
	m.Set(md.Fields().ByName("order_id"), protoreflect.ValueOfString("o"))
	p, _ := pb.Encode(m)
	for _, seed := range [][]byte{a, j, p, {0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0x0f}} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = av.Decode(ctx, data)
		_, _ = js.Decode(ctx, data)
		_, _ = pb.Decode(ctx, data)
	})
}
