// Package kafka is Herald's broker adapter for Apache Kafka, built on
// franz-go. It implements broker.Broker and broker.TopicManager and passes
// the conformance suite in broker/brokertest, except message-id
// deduplication (Kafka has no such window) and the suite's two-member work
// queue on a one-partition topic (Kafka shares work by partition).
//
// Mapping:
//
//   - Publish: one idempotent ProduceSync over the batch, acks=all. Key is
//     the record key; keyed records go to partition
//     broker.Partition(key, n), the hash every Herald adapter uses.
//     Route and ID travel in the headers herald-route and herald-id; Header
//     entries are record headers, unchanged.
//   - A Herald group on a topic is the Kafka consumer group
//     GroupID(topic, group). Partitions are assigned to members
//     (cooperative-sticky), so per-key order holds inside a group of
//     several members. Offsets are committed only for settled deliveries:
//     the lowest unsettled offset of each partition, plus metadata that
//     records settled records and attempt counts above it.
//   - Nack with a delay re-publishes the record to the group's retry topic
//     RetryTopic(topic, group) with its due time and attempt count; the
//     same group consumes it and delivers it when due. Term acks.
//   - Sequence is partition<<48 | offset+1 (offset+1 on a one-partition
//     topic); broker.FromSequence inverts it.
//   - Transact gives exactly-once consume-transform-produce with Kafka
//     transactions.
//
// Select it with a URL:
//
//	opts, err := kafka.ParseURL("kafka://127.0.0.1:9092,127.0.0.2:9092")
//	b, err := kafka.New(ctx, opts...)
//
// docs/brokers-kafka.md describes the semantics in full.
package kafka
