// Package outbox is the transactional outbox on PostgreSQL: Add writes
// events into an outbox table inside the caller's own transaction, so they
// exist if and only if the business change commits; a Relay publishes them
// afterwards and deletes each row once the broker confirmed it.
//
//	tx, _ := pool.Begin(ctx)
//	_, _ = tx.Exec(ctx, "UPDATE orders SET state = 'placed' WHERE id = $1", id)
//	_ = outbox.Add(ctx, tx, placed)                 // same transaction
//	_ = tx.Commit(ctx)
//
//	relay, _ := outbox.NewRelay(pool, client)       // client: a *herald.Client
//	_ = relay.Run(ctx)                              // until ctx is done
//
// What the relay promises:
//
//   - Every committed event is published at least once; the broker's
//     deduplication by event id (JetStream's Nats-Msg-Id, within the
//     stream's dedup window) stores a republished event once.
//   - Events of one partition key are published in the order their
//     transactions committed. Add takes a transaction-scoped lock per key,
//     so two transactions writing events of one key are serialised and row
//     ids follow commit order; the relay publishes in row id order.
//   - No row is skipped when transactions commit out of order: the relay
//     keeps no cursor, it reads whatever is still in the table.
//   - Several relays on one table are safe: the table is split into
//     Partitions by key hash, and a relay publishes a partition only while
//     it holds that partition's transaction-scoped advisory lock, so one
//     relay at a time publishes a key.
//
// Add sends NOTIFY on commit; the relay LISTENs and treats a notification
// as a hint to look now. It polls as well, so a lost notification (or a
// writer configured without them) only delays publishing.
package outbox
