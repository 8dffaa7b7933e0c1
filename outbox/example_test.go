package outbox_test

import (
	"context"
	"errors"
	"log"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/idempotency"
	"github.com/heraldhq/herald/idempotency/pgstore"
	"github.com/heraldhq/herald/outbox"
)

// Exactly-once effects: the handler's business write, the inbox record
// that the event was handled and the event it emits commit in one
// transaction. A redelivery finds the inbox record and changes nothing;
// the relay publishes the emitted event at least once and the broker
// stores it once.
func Example_inbox() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:5432/test")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	inbox, err := pgstore.New(ctx, pool, pgstore.WithMigrate())
	if err != nil {
		log.Fatal(err)
	}
	ob, err := outbox.New(ctx, pool, outbox.WithMigrate())
	if err != nil {
		log.Fatal(err)
	}
	client, err := herald.Connect(ctx, herald.Config{URL: "nats://127.0.0.1:4222", Source: "billing"})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	// The relay publishes what handlers wrote to the outbox.
	relay, err := outbox.NewRelay(ctx, pool, client, outbox.WithOutbox(ob))
	if err != nil {
		log.Fatal(err)
	}
	go func() { _ = relay.Run(ctx) }()

	r, err := client.Router("billing", []string{"orders"})
	if err != nil {
		log.Fatal(err)
	}
	r.Handle("shop.order.placed.v1", func(ctx context.Context, m *consumer.Message) error {
		return charge(ctx, pool, inbox, ob, m)
	})
	if err := r.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

// charge is the handler: inbox claim, business write, outbox, inbox
// completion, one commit.
func charge(ctx context.Context, pool *pgxpool.Pool, inbox *pgstore.Store, ob *outbox.Outbox, m *consumer.Message) error {
	key := m.Group + "/" + m.Event.ID
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := inbox.ClaimTx(ctx, tx, key); err != nil {
			return err // ErrDuplicate: handled before
		}
		if _, err := tx.Exec(ctx, "INSERT INTO charges (order_id) VALUES ($1)", m.Event.Subject); err != nil {
			return err
		}
		charged := event.New("billing", "shop.payment.charged.v1", []byte(`{}`))
		charged.Subject = m.Event.Subject
		charged.CorrelationID, charged.CausationID = m.Event.CorrelationID, m.Event.ID
		if err := ob.Add(ctx, tx, charged); err != nil {
			return err
		}
		return inbox.CompleteTx(ctx, tx, key, 7*24*time.Hour)
	})
	if errors.Is(err, idempotency.ErrDuplicate) {
		return nil // acknowledge: the effect is already there
	}
	return err
}
