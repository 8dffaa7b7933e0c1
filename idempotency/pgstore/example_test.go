package pgstore_test

import (
	"context"
	"errors"
	"log"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/idempotency"
	"github.com/heraldhq/herald/idempotency/pgstore"
)

// A handler whose effect, a balance update, happens exactly once per
// event: the update and the inbox record commit in one transaction.
func ExampleStore_Once() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:5432/test")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store, err := pgstore.New(ctx, pool, pgstore.WithMigrate())
	if err != nil {
		log.Fatal(err)
	}

	handle := func(ctx context.Context, group, eventID, account string, amount int) error {
		err := store.Once(ctx, group+"/"+eventID, 24*time.Hour, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "UPDATE accounts SET balance = balance - $1 WHERE id = $2", amount, account)
			return err
		})
		if errors.Is(err, idempotency.ErrDuplicate) {
			return nil // handled before: acknowledge
		}
		return err
	}
	if err := handle(ctx, "billing", "evt-1", "acct-7", 42); err != nil {
		log.Fatal(err)
	}
}

// ClaimTx and CompleteTx inside a transaction the handler manages.
func ExampleStore_ClaimTx() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:5432/test")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store, err := pgstore.New(ctx, pool)
	if err != nil {
		log.Fatal(err)
	}
	key := "billing/evt-2"

	tx, err := pool.Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	switch err := store.ClaimTx(ctx, tx, key); {
	case errors.Is(err, idempotency.ErrDuplicate):
		return // done before
	case err != nil:
		log.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO invoices (event_key) VALUES ($1)", key); err != nil {
		log.Fatal(err)
	}
	if err := store.CompleteTx(ctx, tx, key, 24*time.Hour); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		log.Fatal(err)
	}
}
