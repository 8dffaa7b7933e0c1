package memory

import (
	"context"
	"log/slog"

	"github.com/heraldhq/herald/broker"
)

// Importing the package registers the memory:// scheme with
// broker.Register. Each Open returns a new, empty broker.
func init() {
	broker.Register("memory", broker.Driver{Binding: "nats", Open: func(context.Context, string, *slog.Logger) (broker.Broker, error) {
		return New(), nil
	}})
}
