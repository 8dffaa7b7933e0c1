package main

// The CLI speaks to every broker Herald has an adapter for.
import (
	_ "github.com/heraldhq/herald/broker/kafka"    // registers kafka://
	_ "github.com/heraldhq/herald/broker/rabbitmq" // registers amqp://, amqps://
)
