// Package rabbitmq is Herald's RabbitMQ broker adapter, built on
// github.com/rabbitmq/amqp091-go. It implements broker.Broker and
// broker.TopicManager and passes the conformance suite in broker/brokertest
// except deduplication, which RabbitMQ does not offer.
//
// Layout: a topic is a durable topic exchange "herald/<topic>"; the route
// is the routing key. The topic log, a stream "herald/<topic>/log" bound
// with "#", keeps every message so that groups can start in the past (turn
// it off with WithTopicLog(false)). A group is a quorum queue
// "herald/<topic>/g/<group>" bound with "#" or its routes, with a
// dead-letter queue "<queue>/dlq"; on a topic with Partitions n it is n
// single-active-consumer quorum queues behind a headers exchange, which
// keeps per-key order with several members.
//
// Publish pipelines a call's messages on a confirm-mode channel with
// mandatory publishing and returns when each is confirmed. Consumers use
// prefetch = MaxInFlight; Nack with a delay goes through delay queues that
// dead-letter back; a delivery unsettled for AckWait is requeued by the
// adapter. Connections and channels are restored after a connection loss
// or a broker restart, and consumers resume.
//
//	b, err := rabbitmq.New(ctx, "amqp://guest:guest@127.0.0.1:5672/")
//	if err != nil {
//		return err
//	}
//	defer b.Close()
//	err = b.Publish(ctx, &broker.Message{Topic: "orders", Route: "shop.order.placed.v1", Key: "o-1", Data: data})
//
// docs/brokers-rabbitmq.md describes the semantics in full.
package rabbitmq
