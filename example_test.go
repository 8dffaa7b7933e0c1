package herald_test

import (
	"context"
	"log"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/consumer"
)

type ExampleOrderPlaced struct {
	ID    string `json:"id"`
	Total int    `json:"total"`
}

var examplePlaced = herald.Type[ExampleOrderPlaced]("shop.order.placed.v1", herald.OnTopic("orders"))

// The README's example: publish a typed event and handle it.
func Example() {
	ctx := context.Background()
	c, err := herald.Connect(ctx, herald.Config{URL: "nats://127.0.0.1:4222", Source: "shop"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// Returns once the broker confirmed the event.
	if err := examplePlaced.Publish(ctx, c, ExampleOrderPlaced{ID: "o-1", Total: 42}, herald.WithSubject("o-1")); err != nil {
		log.Fatal(err)
	}

	r, _ := c.Router("billing", []string{"orders"}) // retries, dead letters, per-key order by default
	herald.Handle(r, examplePlaced, func(ctx context.Context, o ExampleOrderPlaced, m *consumer.Message) error {
		log.Printf("charge %s: %d", o.ID, o.Total) // return an error to retry, then dead-letter
		return nil
	})
	log.Fatal(r.Run(ctx)) // until ctx is cancelled; then finishes in-flight work
}
