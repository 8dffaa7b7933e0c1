package natsjs

import (
	"context"
	"log/slog"

	"github.com/heraldhq/herald/broker"
)

// Importing the package registers the nats:// and tls:// schemes with
// broker.Register.
func init() {
	for _, s := range []string{"nats", "tls"} {
		broker.Register(s, broker.Driver{Binding: "nats", Open: open})
	}
}

func open(ctx context.Context, url string, log *slog.Logger) (broker.Broker, error) {
	opts := []Option{WithURL(url)}
	if log != nil {
		opts = append(opts, WithLogger(log))
	}
	return New(ctx, opts...)
}
