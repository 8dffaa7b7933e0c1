// Package event defines Herald's envelope: a CloudEvents 1.0 event with the
// extensions Herald relies on (correlation, causation, partition key,
// aggregate sequence, trace context), and its codecs.
//
// Two encodings are supported, both from the CloudEvents protocol bindings:
//
//   - binary content mode, where attributes travel as broker headers and the
//     payload is left untouched (see [Binding], [Binding.Encode],
//     [Binding.Decode]). This is what Herald publishes, so a registry wire
//     format in the payload survives.
//   - structured JSON (application/cloudevents+json), accepted on ingest and
//     used by the CLI (see [MarshalJSON] and [UnmarshalJSON]).
//
// Header names follow the bindings exactly, so standard CloudEvents tooling
// (for example github.com/cloudevents/sdk-go) reads Herald's events unchanged:
// NATS uses lowercase "ce-id", "ce-datacontenttype"...; Kafka "ce_id"... and
// "content-type"; AMQP "cloudEvents_id"... and the content-type property.
//
// The package imports nothing else of Herald's.
package event
