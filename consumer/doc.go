// Package consumer runs handlers for events: a Router joins a consumer group
// on one or more topics, decodes each delivery into an event, and calls the
// handler registered for its type, through middleware.
//
// A handler returns nil to acknowledge. Any error is a failure: by default
// the router retries it with exponential backoff and jitter, using the
// broker's delayed redelivery (no goroutine sleeps holding a slot), and
// after MaxAttempts moves the event to the topic's dead-letter queue
// ("<topic>.dlq") with the error context in headers. A delivery that cannot
// be decoded goes to the dead-letter queue at once. A panic is a failure,
// never a crash.
//
// Events with the same partition key are handled one at a time, in order;
// different keys run in parallel up to the router's concurrency.
//
//	r, err := consumer.NewRouter(b, b, "billing", []string{"orders"})
//	r.Handle("shop.order.placed.v1", func(ctx context.Context, m *consumer.Message) error {
//		return charge(ctx, m.Event)
//	})
//	err = r.Run(ctx) // until ctx is cancelled; then drains in-flight handlers
package consumer
