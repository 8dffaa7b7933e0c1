package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/gateway"
)

// collector is a Go consumer of a topic that keeps what it received.
type collector struct {
	mu     sync.Mutex
	events []*event.Event
}

func (c *collector) got() []*event.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*event.Event(nil), c.events...)
}

func consume(t *testing.T, srv *server.Server, topic string) *collector {
	t.Helper()
	cl, err := herald.Connect(t.Context(), herald.Config{URL: srv.NATSURL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	r, err := cl.Router(testenv.Unique("g"), []string{topic}, consumer.WithStart(broker.FromFirst))
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	r.HandleAll(func(_ context.Context, m *consumer.Message) error {
		c.mu.Lock()
		c.events = append(c.events, m.Event)
		c.mu.Unlock()
		return nil
	})
	testenv.RunRouter(t, r)
	return c
}

func waitCount(t *testing.T, c *collector, n int) []*event.Event {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("%d events at the Go consumer", n), func() (bool, string) {
		got := len(c.got())
		return got >= n, fmt.Sprintf("%d received", got)
	})
	return c.got()
}

func ingestURL(srv *server.Server, topic string) string {
	return srv.GatewayURL() + "/v1/topics/" + topic + "/events"
}

func TestIngestModes(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{})
	topic := newTopic(t, srv)
	c := consume(t, srv, topic)
	url := ingestURL(srv, topic)

	// Binary mode: attributes in headers, payload untouched.
	code, body := post(t, url, map[string]string{
		"Ce-Specversion": "1.0", "Ce-Id": "bin-1", "Ce-Source": "py/orders", "Ce-Type": "shop.order.placed.v1",
		"Ce-Subject": "o-1", "Ce-Correlationid": "c-1", "Ce-Tenant": "acme%20corp", "Content-Type": "application/json",
	}, []byte(`{"total":42}`))
	if code != http.StatusAccepted {
		t.Fatalf("binary: status %d: %s", code, body)
	}
	var ack gateway.IngestResponse
	if err := json.Unmarshal(body, &ack); err != nil || ack.Accepted != 1 || ack.IDs[0] != "bin-1" {
		t.Fatalf("binary: answer %s (%v)", body, err)
	}

	// Structured mode.
	code, body = post(t, url, map[string]string{"Content-Type": "application/cloudevents+json; charset=utf-8"},
		[]byte(`{"specversion":"1.0","id":"str-1","source":"py/orders","type":"shop.order.paid.v1","subject":"o-1","data":{"amount":42}}`))
	if code != http.StatusAccepted {
		t.Fatalf("structured: status %d: %s", code, body)
	}

	// Batch.
	var batch []map[string]any
	for i := range 100 {
		batch = append(batch, map[string]any{"specversion": "1.0", "id": fmt.Sprintf("b-%d", i), "source": "py/orders",
			"type": "shop.order.placed.v1", "subject": fmt.Sprintf("o-%d", i%7), "data": map[string]int{"n": i}})
	}
	code, body = post(t, url, map[string]string{"Content-Type": gateway.ContentTypeBatch}, mustJSON(t, batch))
	if code != http.StatusAccepted {
		t.Fatalf("batch: status %d: %s", code, body)
	}
	if err := json.Unmarshal(body, &ack); err != nil || ack.Accepted != 100 || len(ack.IDs) != 100 {
		t.Fatalf("batch: answer %s (%v)", body, err)
	}

	got := waitCount(t, c, 102)
	byID := map[string]*event.Event{}
	for _, e := range got {
		byID[e.ID] = e
	}
	if len(byID) != 102 {
		t.Fatalf("got %d distinct events, want 102", len(byID))
	}
	b := byID["bin-1"]
	if b.Type != "shop.order.placed.v1" || b.Subject != "o-1" || b.CorrelationID != "c-1" || string(b.Data) != `{"total":42}` ||
		b.DataContentType != "application/json" || b.Extensions["tenant"] != "acme corp" || b.Time.IsZero() {
		t.Errorf("binary event arrived as %+v", b)
	}
	if s := byID["str-1"]; s.Type != "shop.order.paid.v1" || string(s.Data) != `{"amount":42}` {
		t.Errorf("structured event arrived as %+v (data %s)", s, s.Data)
	}
	// Events of one key keep their batch order.
	last := map[string]int{}
	for _, e := range got {
		var n struct{ N int }
		if !strings.HasPrefix(e.ID, "b-") {
			continue
		}
		_ = json.Unmarshal(e.Data, &n)
		if p, ok := last[e.Subject]; ok && n.N < p {
			t.Fatalf("key %s: event %d after %d", e.Subject, n.N, p)
		}
		last[e.Subject] = n.N
	}
}

func TestIngestIdempotentByID(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{})
	topic := newTopic(t, srv)
	h := map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "same", "Ce-Source": "s", "Ce-Type": "a.b"}
	for range 3 {
		if code, body := post(t, ingestURL(srv, topic), h, []byte("x")); code != http.StatusAccepted {
			t.Fatalf("status %d: %s", code, body)
		}
	}
	if n := stored(t, srv, topic); n != 1 {
		t.Fatalf("topic holds %d messages after 3 posts of one id, want 1", n)
	}
}

func TestIngestBadInput(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{})
	topic := newTopic(t, srv)
	bin := func(extra ...string) map[string]string {
		h := map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "x", "Ce-Source": "s", "Ce-Type": "a.b"}
		for i := 0; i < len(extra); i += 2 {
			if extra[i+1] == "" {
				delete(h, extra[i])
			} else {
				h[extra[i]] = extra[i+1]
			}
		}
		return h
	}
	structured := map[string]string{"Content-Type": gateway.ContentTypeStructured}
	batch := map[string]string{"Content-Type": gateway.ContentTypeBatch}
	good := `{"specversion":"1.0","id":"g1","source":"s","type":"a.b"}`
	cases := []struct {
		name   string
		topic  string
		h      map[string]string
		body   string
		status int
		detail string
	}{
		{"plain JSON body", topic, map[string]string{"Content-Type": "application/json"}, `{"a":1}`, 415, "not a CloudEvent"},
		{"no content type", topic, map[string]string{}, `hello`, 415, "not a CloudEvent"},
		{"unparsable content type", topic, map[string]string{"Content-Type": "a/b; ;;="}, `x`, 415, "does not parse"},
		{"other structured format", topic, map[string]string{"Content-Type": "application/cloudevents+xml"}, `<e/>`, 415, "formats served"},
		{"binary without id", topic, bin("Ce-Id", ""), `x`, 400, `"id" is required`},
		{"binary without source", topic, bin("Ce-Source", ""), `x`, 400, `"source" is required`},
		{"binary wrong specversion", topic, bin("Ce-Specversion", "0.3"), `x`, 400, "not supported"},
		{"binary bad time", topic, bin("Ce-Time", "yesterday"), `x`, 400, "RFC 3339"},
		{"binary bad extension name", topic, bin("Ce-Bad_Name", "v"), `x`, 400, "only lowercase"},
		{"type that cannot route", topic, bin("Ce-Type", "a..b"), `x`, 400, "cannot route"},
		{"structured not JSON", topic, structured, `{not json`, 400, "structured JSON"},
		{"structured without type", topic, structured, `{"specversion":"1.0","id":"1","source":"s"}`, 400, `"type" is required`},
		{"batch not an array", topic, batch, good, 400, "JSON array"},
		{"batch empty", topic, batch, `[]`, 400, "no events"},
		{"batch null", topic, batch, `null`, 400, "got null"},
		{"batch not closed", topic, batch, `[` + good, 400, "before the array is closed"},
		{"batch member not an object", topic, batch, `[` + good + `,7]`, 400, "expected an object, got number"},
		{"batch over the event limit", topic, batch, `[` + strings.Repeat(`{},`, gateway.DefaultMaxBatch) + `{}]`, 413, "over the limit"},
		{"batch trailing data", topic, batch, `[` + good + `] x`, 400, "after the JSON array"},
		{"batch one bad event", topic, batch, `[` + good + `,{"specversion":"1.0","id":"2","type":"a.b"}]`, 400, "1 of 2 events are invalid"},
		{"batch duplicate id", topic, batch, `[` + good + `,` + good + `]`, 400, "also the id of event 0"},
		{"unknown topic", "no-such-topic", bin(), `x`, 404, "does not exist"},
		{"bad topic name", "bad*name", bin(), `x`, 400, "topic name"},
		{"body over the limit", topic, bin("Content-Type", "application/octet-stream"), strings.Repeat("x", gateway.DefaultMaxBody+1), 413, "over the limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := post(t, ingestURL(srv, tc.topic), tc.h, []byte(tc.body))
			if code != tc.status {
				t.Fatalf("status %d, want %d: %s", code, tc.status, body)
			}
			var p gateway.Problem
			if err := json.Unmarshal(body, &p); err != nil {
				t.Fatalf("answer is not a problem document: %s", body)
			}
			if p.Status != tc.status || p.Title != http.StatusText(tc.status) || !strings.Contains(p.Detail, tc.detail) {
				t.Fatalf("problem %+v, want status %d and a detail with %q", p, tc.status, tc.detail)
			}
		})
	}
	t.Run("batch errors name the bad events", func(t *testing.T) {
		body := `[` + good + `,{"specversion":"1.0","id":"2","type":"a.b"},{"specversion":"1.0","id":"3","source":"s","type":"a.b"},{"id":4}]`
		code, b := post(t, ingestURL(srv, topic), batch, []byte(body))
		var p gateway.Problem
		_ = json.Unmarshal(b, &p)
		if code != 400 || len(p.Errors) != 2 || p.Errors[0].Index != 1 || p.Errors[1].Index != 3 {
			t.Fatalf("status %d, problem %s: want 400 naming events 1 and 3", code, b)
		}
	})
	t.Run("too many events in a batch", func(t *testing.T) {
		var evs []string
		for i := range gateway.DefaultMaxBatch + 1 {
			evs = append(evs, fmt.Sprintf(`{"specversion":"1.0","id":"%d","source":"s","type":"a.b"}`, i))
		}
		code, b := post(t, ingestURL(srv, topic), batch, []byte("["+strings.Join(evs, ",")+"]"))
		if code != 413 {
			t.Fatalf("status %d: %s", code, b)
		}
	})
	if n := stored(t, srv, topic); n != 0 {
		t.Fatalf("bad requests stored %d messages", n)
	}
}

func TestIngestValidatesAgainstRegistry(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{})
	topic := newTopic(t, srv)
	typ := testenv.Unique("shop.order.placed") + ".v1"
	_, err := srv.Registry().Register(t.Context(), typ, schema.Schema{Type: schema.JSON,
		Text: `{"type":"object","properties":{"total":{"type":"number"}},"required":["total"]}`}, schema.RegisterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h := func(id string) map[string]string {
		return map[string]string{"Ce-Specversion": "1.0", "Ce-Id": id, "Ce-Source": "s", "Ce-Type": typ, "Content-Type": "application/json"}
	}
	if code, b := post(t, ingestURL(srv, topic), h("ok"), []byte(`{"total":3}`)); code != 202 {
		t.Fatalf("valid payload: status %d: %s", code, b)
	}
	code, b := post(t, ingestURL(srv, topic), h("bad"), []byte(`{"total":"three"}`))
	if code != 400 || !strings.Contains(string(b), "does not match schema") {
		t.Fatalf("invalid payload: status %d: %s", code, b)
	}
	// Framed in the wire format with an id of another subject.
	other, err := srv.Registry().Register(t.Context(), testenv.Unique("other"), schema.Schema{Type: schema.JSON, Text: `{"type":"object"}`}, schema.RegisterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	framed := append([]byte{0, 0, 0, 0, byte(other.ID)}, `{"total":1}`...)
	code, b = post(t, ingestURL(srv, topic), h("framed"), framed)
	if code != 400 || !strings.Contains(string(b), "not a version of subject") {
		t.Fatalf("foreign schema id: status %d: %s", code, b)
	}
	// Types without a schema pass unchecked.
	untyped := h("free")
	untyped["Ce-Type"] = "no.schema.v1"
	if code, b := post(t, ingestURL(srv, topic), untyped, []byte(`anything`)); code != 202 {
		t.Fatalf("type without schema: status %d: %s", code, b)
	}
	if n := stored(t, srv, topic); n != 2 {
		t.Fatalf("topic holds %d messages, want the 2 valid ones", n)
	}
}

// The CloudEvents sdk-go HTTP client publishes to the ingest endpoint in
// binary and structured mode, unchanged.
func TestIngestFromSDKGoClient(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{})
	topic := newTopic(t, srv)
	c := consume(t, srv, topic)
	ce, err := cloudevents.NewClientHTTP(cehttp.WithTarget(ingestURL(srv, topic)))
	if err != nil {
		t.Fatal(err)
	}
	for i, ctx := range []context.Context{t.Context(), binding.WithForceStructured(t.Context())} {
		e := cloudevents.NewEvent()
		e.SetID(fmt.Sprintf("sdk-%d", i))
		e.SetSource("sdk-go")
		e.SetType("shop.order.placed.v1")
		e.SetSubject("o-9")
		e.SetExtension("correlationid", "corr-9")
		if err := e.SetData(cloudevents.ApplicationJSON, map[string]int{"total": i}); err != nil {
			t.Fatal(err)
		}
		res := ce.Send(ctx, e)
		if !cloudevents.IsACK(res) {
			t.Fatalf("send %d: %v", i, res)
		}
		var hr *cehttp.Result
		if !cloudevents.ResultAs(res, &hr) || hr.StatusCode != http.StatusAccepted {
			t.Fatalf("send %d: result %v, want HTTP 202", i, res)
		}
	}
	got := waitCount(t, c, 2)
	for i, e := range got {
		if e.Source != "sdk-go" || e.Subject != "o-9" || e.CorrelationID != "corr-9" || e.DataContentType != "application/json" ||
			string(e.Data) != fmt.Sprintf(`{"total":%d}`, i) {
			t.Errorf("event %d arrived as %+v, data %s", i, e, e.Data)
		}
	}
}
