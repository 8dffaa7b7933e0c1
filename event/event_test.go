package event_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/event"
)

func full() *event.Event {
	e := event.New("/shop/orders", "shop.order.placed.v1", []byte(`{"id":"o-1"}`))
	e.Subject = "o-1"
	e.DataContentType = "application/json"
	e.DataSchema = "http://127.0.0.1:8081/schemas/ids/3"
	e.CorrelationID = "c-1"
	e.CausationID = "cmd-1"
	e.PartitionKey = "customer-7"
	e.Sequence = 12
	e.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	e.TraceState = "rojo=00f067aa0ba902b7"
	e.Extensions = map[string]string{"tenant": "acme", "depth": "2"}
	return e
}

func TestNewUsesUUIDv7(t *testing.T) {
	e := event.New("s", "t", nil)
	id, err := uuid.Parse(e.ID)
	if err != nil {
		t.Fatalf("id %q: %v", e.ID, err)
	}
	if id.Version() != 7 {
		t.Fatalf("id version %d, want 7", id.Version())
	}
	if time.Since(e.Time) > time.Minute || e.Time.Location() != time.UTC {
		t.Fatalf("time %v is not now in UTC", e.Time)
	}
	a, b := event.NewID(), event.NewID()
	if a >= b {
		t.Fatalf("UUIDv7 ids should sort by creation: %s then %s", a, b)
	}
}

func TestKey(t *testing.T) {
	e := &event.Event{Subject: "s"}
	if e.Key() != "s" {
		t.Fatalf("Key() = %q, want subject", e.Key())
	}
	e.PartitionKey = "p"
	if e.Key() != "p" {
		t.Fatalf("Key() = %q, want partition key", e.Key())
	}
}

func TestValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		mod  func(*event.Event)
		want string
	}{
		"no id":              {func(e *event.Event) { e.ID = "" }, `"id" is required`},
		"no source":          {func(e *event.Event) { e.Source = "" }, `"source" is required`},
		"no type":            {func(e *event.Event) { e.Type = "" }, `"type" is required`},
		"underscore ext":     {func(e *event.Event) { e.Extensions = map[string]string{"correlation_id": "x"} }, "lowercase ASCII letters and digits"},
		"upper ext":          {func(e *event.Event) { e.Extensions = map[string]string{"Tenant": "x"} }, "lowercase ASCII letters and digits"},
		"core name ext":      {func(e *event.Event) { e.Extensions = map[string]string{"subject": "x"} }, "core attribute"},
		"known ext in map":   {func(e *event.Event) { e.Extensions = map[string]string{"correlationid": "x"} }, "through its field"},
		"too long ext":       {func(e *event.Event) { e.Extensions = map[string]string{strings.Repeat("a", 21): "x"} }, "longer than 20"},
		"valid full event":   {func(e *event.Event) {}, ""},
		"valid minimal data": {func(e *event.Event) { e.Data = nil; e.Extensions = nil }, ""},
	} {
		t.Run(name, func(t *testing.T) {
			e := full()
			tc.mod(e)
			err := e.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, event.ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid containing %q", err, tc.want)
			}
		})
	}
}

func TestBinaryRoundTrip(t *testing.T) {
	for _, b := range []event.Binding{event.NATS, event.Kafka, event.AMQP} {
		t.Run(b.String(), func(t *testing.T) {
			e := full()
			h := map[string]string{}
			b.Encode(e, h)
			if len(h) != b.HeaderCount(e) {
				t.Fatalf("HeaderCount = %d, Encode wrote %d", b.HeaderCount(e), len(h))
			}
			h["Nats-Msg-Id"] = e.ID // foreign headers are ignored
			got, err := b.Decode(h, e.Data)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, e) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, e)
			}
		})
	}
}

func TestBindingHeaderNames(t *testing.T) {
	e := full()
	for _, tc := range []struct {
		b            event.Binding
		id, ct, corr string
		notCT        string
	}{
		{event.NATS, "ce-id", "ce-datacontenttype", "ce-correlationid", "content-type"},
		{event.Kafka, "ce_id", "content-type", "ce_correlationid", "ce_datacontenttype"},
		{event.AMQP, "cloudEvents_id", "content-type", "cloudEvents_correlationid", "cloudEvents_datacontenttype"},
	} {
		h := map[string]string{}
		tc.b.Encode(e, h)
		if h[tc.id] != e.ID || h[tc.ct] != e.DataContentType || h[tc.corr] != "c-1" {
			t.Errorf("%s: headers %v lack %s/%s/%s", tc.b, h, tc.id, tc.ct, tc.corr)
		}
		if _, both := h[tc.notCT]; both {
			t.Errorf("%s: wrote datacontenttype twice (%s and %s)", tc.b, tc.ct, tc.notCT)
		}
	}
}

func TestBinaryDecodeAccepts(t *testing.T) {
	base := map[string]string{"ce-specversion": "1.0", "ce-id": "1", "ce-source": "s", "ce-type": "t"}
	with := func(k, v string) map[string]string {
		h := map[string]string{}
		for a, b := range base {
			h[a] = b
		}
		h[k] = v
		return h
	}
	e, err := event.NATS.Decode(with("content-type", "text/plain"), []byte("hi"))
	if err != nil || e.DataContentType != "text/plain" {
		t.Fatalf("NATS content-type on read: %v %+v", err, e)
	}
	e, err = event.AMQP.Decode(map[string]string{"cloudEvents:specversion": "1.0", "cloudEvents:id": "1", "cloudEvents:source": "s", "cloudEvents:type": "t"}, nil)
	if err != nil || e.ID != "1" {
		t.Fatalf("AMQP colon prefix: %v", err)
	}
}

func TestBinaryDecodeErrors(t *testing.T) {
	ok := map[string]string{"ce-specversion": "1.0", "ce-id": "1", "ce-source": "s", "ce-type": "t"}
	for name, tc := range map[string]struct {
		set, del string
		val      string
		want     string
	}{
		"no specversion": {del: "ce-specversion", want: "not a binary-mode CloudEvent"},
		"old spec":       {set: "ce-specversion", val: "0.3", want: "not supported"},
		"no id":          {del: "ce-id", want: `"id" is required`},
		"bad time":       {set: "ce-time", val: "yesterday", want: "RFC 3339"},
		"bad ext name":   {set: "ce-correlation_id", val: "x", want: "lowercase"},
		"bad sequence":   {set: "ce-sequence", val: "-1", want: "unsigned integer"},
	} {
		t.Run(name, func(t *testing.T) {
			h := map[string]string{}
			for k, v := range ok {
				h[k] = v
			}
			if tc.del != "" {
				delete(h, tc.del)
			}
			if tc.set != "" {
				h[tc.set] = tc.val
			}
			_, err := event.NATS.Decode(h, nil)
			if err == nil || !errors.Is(err, event.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrInvalid containing %q", err, tc.want)
			}
		})
	}
}

func TestJSONRoundTrip(t *testing.T) {
	for name, mod := range map[string]func(*event.Event){
		"json data":   func(e *event.Event) {},
		"binary data": func(e *event.Event) { e.DataContentType = "application/avro"; e.Data = []byte{0, 1, 2, 255} },
		"no data":     func(e *event.Event) { e.Data = nil },
		"no type":     func(e *event.Event) { e.DataContentType = ""; e.Data = []byte(`[1,2]`) },
	} {
		t.Run(name, func(t *testing.T) {
			e := full()
			mod(e)
			b, err := event.MarshalJSON(e)
			if err != nil {
				t.Fatal(err)
			}
			got, err := event.UnmarshalJSON(b)
			if err != nil {
				t.Fatalf("%v in %s", err, b)
			}
			if !reflect.DeepEqual(got, e) {
				t.Fatalf("round trip via %s:\n got %+v\nwant %+v", b, got, e)
			}
		})
	}
}

func TestUnmarshalJSONForms(t *testing.T) {
	e, err := event.UnmarshalJSON([]byte(`{"specversion":"1.0","id":"1","source":"s","type":"t",
		"datacontenttype":"text/plain","data":"hello","count":3,"flag":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if string(e.Data) != "hello" || e.Extensions["count"] != "3" || e.Extensions["flag"] != "true" {
		t.Fatalf("decoded %+v", e)
	}
	for name, tc := range map[string]struct{ in, want string }{
		"not json":       {`{`, "structured JSON"},
		"array":          {`[]`, "structured JSON"},
		"null":           {`null`, "expected an object"},
		"no specversion": {`{"id":"1","source":"s","type":"t"}`, "specversion"},
		"number id":      {`{"specversion":"1.0","id":1,"source":"s","type":"t"}`, `"id" must be a string`},
		"both data":      {`{"specversion":"1.0","id":"1","source":"s","type":"t","data":1,"data_base64":"AA=="}`, "both"},
		"bad base64":     {`{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":"!!"}`, "data_base64"},
		"object ext":     {`{"specversion":"1.0","id":"1","source":"s","type":"t","x":{}}`, "string, number or boolean"},
		"bad time":       {`{"specversion":"1.0","id":"1","source":"s","type":"t","time":"noon"}`, "RFC 3339"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := event.UnmarshalJSON([]byte(tc.in))
			if err == nil || !errors.Is(err, event.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrInvalid containing %q", err, tc.want)
			}
		})
	}
}

func TestIsJSONContentType(t *testing.T) {
	for ct, want := range map[string]bool{
		"": true, "application/json": true, "application/json; charset=utf-8": true,
		"application/cloudevents+json": true, "text/json": true, "application/avro": false, "text/plain": false,
	} {
		if got := event.IsJSONContentType(ct); got != want {
			t.Errorf("IsJSONContentType(%q) = %v, want %v", ct, got, want)
		}
	}
}

func FuzzBinaryDecode(f *testing.F) {
	f.Add("ce-specversion", "1.0", "ce-time", "2026-01-02T03:04:05Z", "ce-sequence", "3", []byte("x"))
	f.Add("ce-specversion", "1.0", "ce-Type", "t", "content-type", "a/b", []byte(nil))
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, k3, v3 string, data []byte) {
		h := map[string]string{"ce-id": "1", "ce-source": "s", "ce-type": "t", k1: v1, k2: v2, k3: v3}
		e, err := event.NATS.Decode(h, data)
		if err != nil {
			if !errors.Is(err, event.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		// A decoded event re-encodes and decodes to itself.
		out := map[string]string{}
		event.NATS.Encode(e, out)
		e2, err := event.NATS.Decode(out, data)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !e2.Time.Equal(e.Time) {
			t.Fatalf("time changed: %v -> %v", e.Time, e2.Time)
		}
		e2.Time = e.Time
		if !reflect.DeepEqual(e, e2) {
			t.Fatalf("re-decode differs:\n%+v\n%+v", e, e2)
		}
	})
}

func FuzzUnmarshalJSON(f *testing.F) {
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"s","type":"t","data":{"a":1}}`))
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"s","type":"t","datacontenttype":"text/plain","data":"x"}`))
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":"AAEC","sequence":5}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := event.UnmarshalJSON(b)
		if err != nil {
			if !errors.Is(err, event.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		out, err := event.MarshalJSON(e)
		if err != nil {
			t.Fatalf("marshal decoded event: %v", err)
		}
		if _, err := event.UnmarshalJSON(out); err != nil {
			t.Fatalf("re-decode %s: %v", out, err)
		}
	})
}

// DecodeInto overwrites what its target held, in both content modes.
func TestDecodeIntoOverwrites(t *testing.T) {
	want := full()
	h := map[string]string{}
	event.NATS.Encode(want, h)
	structured, err := event.MarshalJSON(want)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		h    map[string]string
		data []byte
	}{
		{"binary", h, want.Data},
		{"structured", map[string]string{"content-type": event.ContentTypeJSON}, structured},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := &event.Event{ID: "stale", CausationID: "stale", Extensions: map[string]string{"stale": "1"}}
			got, err := event.NATS.DecodeInto(target, tc.h, tc.data)
			if err != nil {
				t.Fatal(err)
			}
			if got != target {
				t.Fatalf("DecodeInto returned %p, want its target %p", got, target)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("decoded\n %+v\nwant %+v", got, want)
			}
		})
	}
}
