package web_test

import (
	"encoding/binary"
	"net/http"
	"regexp"
	"strings"
	"testing"

	havro "github.com/hamba/avro/v2"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/servertest"
)

const (
	orderV1 = `{"type":"record","name":"Order","fields":[{"name":"id","type":"string"}]}`
	orderV2 = `{"type":"record","name":"Order","fields":[{"name":"id","type":"string"},{"name":"total","type":"long","default":0}]}`
)

// TestSchemaPages lists subjects, diffs two versions side by side (the
// added field on the right) and decodes an Avro payload by its schema on
// the event page.
func TestSchemaPages(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, server.Config{})
	base := srv.AdminURL()
	ctx := t.Context()
	subject := testenv.Unique("orders") + "-value"
	reg := srv.Registry()
	if _, err := reg.Register(ctx, subject, schema.Schema{Type: schema.Avro, Text: orderV1}, schema.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	v2, err := reg.Register(ctx, subject, schema.Schema{Type: schema.Avro, Text: orderV2}, schema.RegisterOptions{})
	if err != nil {
		t.Fatal(err)
	}

	code, body := get(t, base, "/schemas")
	if code != http.StatusOK || !strings.Contains(body, `href="/schemas/`+subject+`"`) {
		t.Fatalf("schemas page: %d:\n%s", code, body)
	}
	code, body = get(t, base, "/schemas/"+subject)
	added := regexp.MustCompile(`<tr class="(add|change)">[^\n]*<td class="r">[^<]*&#34;name&#34;: &#34;total&#34;`)
	if code != http.StatusOK || !added.MatchString(body) || !strings.Contains(body, "Compatibility level <strong>BACKWARD</strong>") {
		t.Fatalf("schema diff: %d, want the field total added on the right:\n%s", code, body)
	}
	if strings.Contains(body, `<td class="l">          &#34;name&#34;: &#34;total&#34;`) {
		t.Fatalf("schema diff shows total in version 1:\n%s", body)
	}
	for _, tc := range []struct {
		path string
		code int
	}{
		{"/schemas/" + testenv.Unique("none"), http.StatusNotFound},
		{"/schemas/" + subject + "?a=x", http.StatusBadRequest},
		{"/schemas/" + subject + "?a=7", http.StatusNotFound},
	} {
		if code, body := get(t, base, tc.path); code != tc.code || !strings.Contains(body, `class="err"`) {
			t.Fatalf("GET %s: %d, want %d with the reason:\n%s", tc.path, code, tc.code, body)
		}
	}

	// An event in the registry wire format decodes by its schema.
	sch, err := havro.Parse(orderV2)
	if err != nil {
		t.Fatal(err)
	}
	body2, err := havro.Marshal(sch, map[string]any{"id": "o-42", "total": int64(4200)})
	if err != nil {
		t.Fatal(err)
	}
	data := append([]byte{0, 0, 0, 0, 0}, body2...)
	binary.BigEndian.PutUint32(data[1:5], uint32(v2.ID))
	topic := testenv.Unique("orders")
	e := event.New("orders", "shop.order.placed.v1", data)
	e.DataContentType = "application/avro"
	h := map[string]string{}
	event.NATS.Encode(e, h)
	if err := srv.Broker().Publish(ctx, &broker.Message{Topic: topic, Route: e.Type, ID: e.ID, Header: h, Data: data}); err != nil {
		t.Fatal(err)
	}
	code, body = get(t, base, "/topics/"+topic+"/events/1")
	if code != http.StatusOK || !strings.Contains(body, "&#34;total&#34;: 4200") || !strings.Contains(body, "Schema id") || !strings.Contains(body, `href="/schemas/`+subject+`"`) {
		t.Fatalf("event page: %d, want the Avro payload decoded by schema %d:\n%s", code, v2.ID, body)
	}
}
