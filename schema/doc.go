// Package schema is Herald's schema registry core: subjects with
// versions, schemas with global ids that are stable and never reused,
// soft and permanent deletes, references between schemas, a global and a
// per-subject compatibility level, and modes (READWRITE, READONLY,
// IMPORT). It speaks Avro, JSON Schema and Protobuf, with compatibility
// checkers for the seven levels written from each format's rules
// (packages schema/avro, schema/jsonschema and schema/protobuf).
//
// A Registry keeps its state in a Store: a JetStream key-value bucket
// (NewKVStore) in production, so it survives restarts and is replicated
// with the cluster, or memory (NewMemoryStore) in tests. Writes are
// revision-checked, so registries sharing a bucket never hand out one id
// or version twice. Package server/registry serves a Registry over HTTP
// with the Confluent REST API; package schema/serde encodes events in the
// Confluent wire format for the SDK.
//
//	store, _ := schema.NewKVStore(ctx, js, schema.DefaultBucket)
//	reg, _ := schema.New(ctx, store)
//	defer reg.Close()
//	sv, err := reg.Register(ctx, "orders-value", schema.Schema{Text: avsc}, schema.RegisterOptions{})
//	if errors.Is(err, schema.ErrIncompatible) {
//		// err names each incompatibility and the version it was found against
//	}
package schema
