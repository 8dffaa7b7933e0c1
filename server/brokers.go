package server

// The platform serves events on any broker Herald has an adapter for
// (--broker kafka://, amqp://...), so it links them all.
import (
	_ "github.com/heraldhq/herald/broker/kafka"    // registers kafka://
	_ "github.com/heraldhq/herald/broker/rabbitmq" // registers amqp://, amqps://
)
