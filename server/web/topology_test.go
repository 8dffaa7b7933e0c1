package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"

	sj "github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/servertest"
)

// asyncAPISchema compiles the AsyncAPI 3.0.0 JSON Schema shipped in
// testdata.
func asyncAPISchema(t *testing.T) *sj.Schema {
	t.Helper()
	f, err := os.Open("testdata/asyncapi-3.0.0.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := sj.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	c := sj.NewCompiler()
	if err := c.AddResource("asyncapi-3.0.0.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("asyncapi-3.0.0.json")
	if err != nil {
		t.Fatalf("compile the AsyncAPI schema: %v", err)
	}
	return s
}

// TestTopologyAndAsyncAPI draws the services, event types and groups seen
// in live traffic and exports them as an AsyncAPI 3.0 document that
// validates against the AsyncAPI JSON Schema.
func TestTopologyAndAsyncAPI(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, server.Config{})
	base := srv.AdminURL()
	c := connect(t, srv, "test")
	orders, payments := testenv.Unique("orders"), testenv.Unique("payments")
	if _, err := srv.Registry().Register(t.Context(), "shop.order.placed.v1", schema.Schema{Type: schema.Avro, Text: orderV2}, schema.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	publish(t, c, "orders", orders, "shop.order.placed.v1", "", 3)
	publish(t, c, "payments", payments, "shop.payment.taken.v1", "", 2)
	r, err := c.Router("shipping", []string{orders, payments}, consumer.WithStart(broker.FromFirst))
	if err != nil {
		t.Fatal(err)
	}
	r.HandleAll(func(context.Context, *consumer.Message) error { return nil })
	testenv.RunRouter(t, r)

	code, body := get(t, base, "/topology")
	for _, want := range []string{"<svg", ">orders</text>", ">payments</text>", ">shop.order.placed.v1</text>", ">shipping</text>", "shipping consumes " + payments} {
		if !strings.Contains(body, want) {
			t.Fatalf("topology page (%d) lacks %q:\n%s", code, want, body)
		}
	}
	code, body = get(t, base, "/topology.svg")
	if code != http.StatusOK || !strings.HasPrefix(body, "<?xml") || !strings.Contains(body, "orders publishes shop.order.placed.v1 on "+orders+" (3 sampled)") {
		t.Fatalf("topology.svg: %d:\n%s", code, body)
	}
	if code, body := get(t, base, "/topology?sample=0"); code != http.StatusBadRequest || !strings.Contains(body, "sample") {
		t.Fatalf("bad sample: %d:\n%s", code, body)
	}

	code, body = get(t, base, "/asyncapi.json")
	if code != http.StatusOK {
		t.Fatalf("asyncapi: %d:\n%s", code, body)
	}
	doc, err := sj.UnmarshalJSON(bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	if err := asyncAPISchema(t).Validate(doc); err != nil {
		t.Fatalf("the export does not validate against AsyncAPI 3.0.0: %v\n%s", err, body)
	}
	var got struct {
		Channels   map[string]struct{ Address string }
		Operations map[string]struct{ Action string }
		Components struct {
			Messages map[string]struct {
				Payload *struct {
					SchemaFormat string
					Schema       struct{ Name string }
				}
			}
		}
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if got.Channels[orders].Address != orders || got.Channels[payments].Address != payments {
		t.Fatalf("channels %+v, want the two topics", got.Channels)
	}
	if got.Operations["publish.orders.shop.order.placed.v1."+orders].Action != "send" || got.Operations["consume.shipping."+payments].Action != "receive" {
		t.Fatalf("operations %+v", got.Operations)
	}
	p := got.Components.Messages["shop.order.placed.v1"].Payload
	if p == nil || p.Schema.Name != "Order" || !strings.Contains(p.SchemaFormat, "avro") {
		t.Fatalf("message shop.order.placed.v1 payload %+v, want the registered Avro schema", p)
	}
	if got.Components.Messages["shop.payment.taken.v1"].Payload != nil {
		t.Fatal("shop.payment.taken.v1 has no schema registered, yet the export gives it one")
	}
}
