package outbox_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/idempotency/pgstore"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/outbox"
)

// schemaPool returns a pool whose connections use a fresh schema (dropped
// after the test) as search path, so unqualified table names, such as
// the example's "charges", are the test's own.
func schemaPool(t testing.TB, maxConns int32) *pgxpool.Pool {
	t.Helper()
	admin := testenv.PGPool(t, 2)
	schema := testenv.SQLName("outbox_it_")
	if _, err := admin.Exec(t.Context(), "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	cfg, err := pgxpool.ParseConfig(testenv.PostgresURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = maxConns
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close) // runs before the schema is dropped
	return p
}

// The example's handler under redelivery: every order is handled twice
// (the first acknowledgement is "lost"), yet each is charged once and
// each payment event is stored once.
func TestInboxWithOutboxExactlyOnceEffects(t *testing.T) {
	p := schemaPool(t, 12)
	ctx := t.Context()
	if _, err := p.Exec(ctx, "CREATE TABLE charges (order_id text NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	inbox, err := pgstore.New(ctx, p, pgstore.WithMigrate())
	if err != nil {
		t.Fatal(err)
	}
	ob, err := outbox.New(ctx, p, outbox.WithMigrate())
	if err != nil {
		t.Fatal(err)
	}
	orders, payments := testenv.SQLName("orders_"), testenv.SQLName("payments_")
	b, err := natsjs.New(ctx, natsjs.WithEmbedded(emb))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, topic := range []string{orders, payments} {
			_ = b.JetStream().DeleteStream(context.Background(), natsjs.StreamName(topic))
		}
		_ = b.Close()
	})
	client, err := herald.Connect(ctx, herald.Config{Broker: b, Source: "billing", Topics: map[string]string{
		"shop.order.placed.v1": orders, "shop.payment.charged.v1": payments,
	}})
	if err != nil {
		t.Fatal(err)
	}

	rctx, cancel := context.WithCancel(ctx)
	relay, err := outbox.NewRelay(ctx, p, client, outbox.WithOutbox(ob), outbox.WithPollInterval(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-relayDone })

	r, err := client.Router("billing", []string{orders}, consumer.WithStart(broker.FromFirst), consumer.WithRetry(consumer.RetryPolicy{
		MaxAttempts: 5, Backoff: consumer.Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond, Multiplier: 2},
	}))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	calls := map[string]int{}
	r.Handle("shop.order.placed.v1", func(ctx context.Context, m *consumer.Message) error {
		if err := charge(ctx, p, inbox, ob, m); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		calls[m.Event.ID]++
		if calls[m.Event.ID] == 1 {
			return errors.New("acknowledgement lost") // committed, but redelivered
		}
		return nil
	})
	testenv.RunRouter(t, r)

	const n = 20
	for i := range n {
		e := event.New("shop", "shop.order.placed.v1", []byte(`{}`))
		e.Subject = "order-" + string(rune('a'+i))
		if err := client.Publish(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 60*time.Second, "every order handled twice and every payment published", func() bool {
		mu.Lock()
		twice := 0
		for _, c := range calls {
			if c >= 2 {
				twice++
			}
		}
		mu.Unlock()
		return twice == n && len(published(t, b, payments)) == n
	})
	var charges, distinct int
	if err := p.QueryRow(ctx, "SELECT count(*), count(DISTINCT order_id) FROM charges").Scan(&charges, &distinct); err != nil {
		t.Fatal(err)
	}
	if charges != n || distinct != n {
		t.Fatalf("%d charges for %d orders, want %d for %d", charges, distinct, n, n)
	}
	got := published(t, b, payments)
	causes := map[string]bool{}
	for _, e := range got {
		causes[e.CausationID] = true
	}
	if len(got) != n || len(causes) != n {
		t.Fatalf("%d payment events caused by %d orders, want %d by %d", len(got), len(causes), n, n)
	}
}
