// Package eventstore keeps state as append-only streams of events: an
// aggregate's history is its stream, rebuilt by replaying it.
//
// A [Store] appends events to a stream with an expected version (optimistic
// concurrency: [Any], [NoStream], [StreamExists], [Exact]); a mismatch
// fails with an error matching [ErrConflict] that names both versions.
// [Store.Load] replays one stream in version order; [Store.ReadAll] reads
// every stream in one global order, by position, which a checkpointed
// reader (a projection) resumes from; [Subscribe] reads from a position,
// signals when it has caught up, then follows new events.
//
// Events are Herald's envelope ([event.Event]): ids, types, correlation and
// causation ids and schemas work as everywhere else. The store sets each
// stored event's Sequence to its stream version.
//
// Implementations: package memory (tests, one process), natsjs (JetStream,
// the embedded default) and postgres. All pass the conformance suite in
// storetest. docs/eventsourcing.md compares their guarantees.
//
//	res, err := store.Append(ctx, "order-42", eventstore.NoStream, placed)
//	for rec, err := range store.Load(ctx, "order-42", 0) {
//		...
//	}
package eventstore
