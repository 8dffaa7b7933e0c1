package herald_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testenv"

	"github.com/google/uuid"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/schema/serde"
	"github.com/heraldhq/herald/server/registry"
)

var emb *natsjs.Embedded

func TestMain(m *testing.M) {
	testenv.MainWithNATS(m, natsjs.EmbeddedConfig{Addr: "127.0.0.1:0"}, func(e *natsjs.Embedded) { emb = e },
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

func client(t *testing.T, cfg herald.Config) *herald.Client {
	t.Helper()
	b, err := natsjs.New(t.Context(), natsjs.WithEmbedded(emb))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	cfg.Broker = b
	c, err := herald.Connect(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func runRouter(t *testing.T, r *consumer.Router) {
	t.Helper()
	testenv.RunRouter(t, r)
}

func TestConnectErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg  herald.Config
		want string
	}{
		"no url":      {herald.Config{}, "Config.URL or Config.Broker is required"},
		"bad scheme":  {herald.Config{URL: "http://x"}, "unsupported scheme"},
		"bad topic":   {herald.Config{URL: "memory://", DefaultTopic: "no spaces"}, "DefaultTopic"},
		"unreachable": {herald.Config{URL: "nats://127.0.0.1:1"}, "unavailable"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := herald.Connect(t.Context(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

type OrderPlaced struct {
	ID    string `json:"id"`
	Total int    `json:"total"`
}

type PaymentRequested struct {
	Order  string `json:"order"`
	Amount int    `json:"amount"`
}

// TestTypedPublishHandleAndCausation publishes a typed event, handles it
// as a Go value, publishes a follow-up from the handler and checks that the
// follow-up carries correlation, causation and depth.
func TestTypedPublishHandleAndCausation(t *testing.T) {
	c := client(t, herald.Config{Source: "orders", Topics: map[string]string{"shop.payment.requested.v1": "payments"}})
	placed := herald.Type[OrderPlaced]("shop.order.placed.v1", herald.OnTopic("orders"))
	requested := herald.Type[PaymentRequested]("shop.payment.requested.v1")

	r, err := c.Router("billing", []string{"orders"}, consumer.WithStart(broker.FromFirst))
	if err != nil {
		t.Fatal(err)
	}
	herald.Handle(r, placed, func(ctx context.Context, o OrderPlaced, m *consumer.Message) error {
		return requested.Publish(ctx, c, PaymentRequested{Order: o.ID, Amount: o.Total}, herald.WithSubject(o.ID))
	})
	runRouter(t, r)

	got := make(chan *consumer.Message, 1)
	var gotValue PaymentRequested
	var once sync.Once
	r2, err := c.Router("audit", []string{"payments"}, consumer.WithStart(broker.FromFirst))
	if err != nil {
		t.Fatal(err)
	}
	herald.Handle(r2, requested, func(ctx context.Context, p PaymentRequested, m *consumer.Message) error {
		once.Do(func() { gotValue = p; got <- m })
		return nil
	})
	runRouter(t, r2)

	if err := placed.Publish(t.Context(), c, OrderPlaced{ID: "o-1", Total: 42}, herald.WithSubject("o-1"), herald.WithCorrelationID("checkout-7")); err != nil {
		t.Fatal(err)
	}
	var m *consumer.Message
	select {
	case m = <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("the follow-up event never arrived")
	}
	e := m.Event
	if gotValue != (PaymentRequested{Order: "o-1", Amount: 42}) {
		t.Fatalf("handled %+v", gotValue)
	}
	if e.CorrelationID != "checkout-7" || e.CausationID == "" || e.Source != "orders" || m.Depth() != 1 {
		t.Fatalf("follow-up: correlation %q causation %q source %q depth %d", e.CorrelationID, e.CausationID, e.Source, m.Depth())
	}
	if e.DataContentType != "application/json" || e.Subject != "o-1" || m.Topic != "payments" {
		t.Fatalf("follow-up: content type %q subject %q topic %q", e.DataContentType, e.Subject, m.Topic)
	}
}

// TestSchemaRefusesInvalidEvents builds a JSON Schema codec against a real
// registry: an invalid value is refused before the broker, a valid one is
// handled and decoded by the id in its payload.
func TestSchemaRefusesInvalidEvents(t *testing.T) {
	reg, err := schema.New(t.Context(), schema.NewMemoryStore())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	srv := httptest.NewServer(registry.NewHandler(reg))
	t.Cleanup(srv.Close)
	cl, err := serde.NewClient(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	codec, err := serde.NewJSONWithSchema[OrderPlaced](t.Context(), cl, "orders-value",
		`{"type":"object","properties":{"id":{"type":"string","minLength":1},"total":{"type":"integer","minimum":0}},"required":["id","total"]}`)
	if err != nil {
		t.Fatal(err)
	}
	topic := "schema-orders-" + uuid.NewString()[:8]
	placed := herald.Type[OrderPlaced]("shop.order.placed.v1", herald.OnTopic(topic), herald.WithSchema(codec))
	c := client(t, herald.Config{Source: "orders"})

	err = placed.Publish(t.Context(), c, OrderPlaced{ID: "o-1", Total: -5})
	if !errors.Is(err, serde.ErrInvalid) {
		t.Fatalf("publishing an invalid order: got %v, want serde.ErrInvalid", err)
	}
	if !strings.Contains(err.Error(), "total") {
		t.Fatalf("error %q does not name the field", err)
	}
	// Nothing reached the broker.
	if s, err := c.Broker().(*natsjs.Broker).JetStream().Stream(t.Context(), natsjs.StreamName(topic)); err == nil {
		if info, _ := s.Info(t.Context()); info.State.Msgs != 0 {
			t.Fatalf("the invalid event reached the broker (%d messages)", info.State.Msgs)
		}
	}

	got := make(chan OrderPlaced, 1)
	var ev *event.Event
	r, err := c.Router("g", []string{topic}, consumer.WithStart(broker.FromFirst))
	if err != nil {
		t.Fatal(err)
	}
	herald.Handle(r, placed, func(ctx context.Context, o OrderPlaced, m *consumer.Message) error {
		ev = m.Event
		got <- o
		return nil
	})
	runRouter(t, r)
	if err := placed.Publish(t.Context(), c, OrderPlaced{ID: "o-2", Total: 9}); err != nil {
		t.Fatal(err)
	}
	select {
	case o := <-got:
		if o != (OrderPlaced{ID: "o-2", Total: 9}) {
			t.Fatalf("decoded %+v", o)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the valid event never arrived")
	}
	if !strings.HasSuffix(ev.DataSchema, "/schemas/ids/1") || ev.Data[0] != 0 {
		t.Fatalf("dataschema %q, first payload byte %d: want a registry reference and the wire format", ev.DataSchema, ev.Data[0])
	}
}
