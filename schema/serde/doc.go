// Package serde puts events in the Confluent wire format (a zero magic
// byte, the 4-byte big-endian schema id, for Protobuf the message index
// path, then the encoded value) and is the building block the SDK uses
// to make schema evolution safe by default:
//
//   - at startup, a Codec per event type registers its schema (or checks
//     that it is registered) and fails fast with ErrIncompatible, naming
//     every incompatibility, when the change would break readers;
//   - Encode validates each value against the schema and refuses an
//     invalid one (ErrInvalid, naming the field and rule) before it
//     reaches the broker;
//   - Decode reads any payload by the schema id it carries, resolving an
//     older or newer writer schema against the codec's own.
//
// Avro codecs use github.com/hamba/avro/v2; JSON codecs generate their
// schema from the Go type with github.com/invopop/jsonschema and validate
// with github.com/santhosh-tekuri/jsonschema/v6; Protobuf codecs use
// google.golang.org/protobuf with a .proto schema compiled by
// github.com/bufbuild/protocompile. A Client talks to any
// Confluent-compatible registry and caches schemas by id.
//
//	cl, _ := serde.NewClient("http://127.0.0.1:8081")
//	orders, err := serde.NewJSON[OrderPlaced](ctx, cl, "orders-value")
//	if err != nil {
//		return err // incompatible with the registered versions, or unreachable
//	}
//	data, err := orders.Encode(OrderPlaced{ID: "o-1", Total: 1250})
//	...
//	ev, err := orders.Decode(ctx, data)
package serde
