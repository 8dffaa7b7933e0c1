package rabbitmq

import (
	"context"
	"log/slog"

	"github.com/heraldhq/herald/broker"
)

// Importing the package registers the amqp:// and amqps:// schemes with
// broker.Register.
func init() {
	for _, s := range []string{"amqp", "amqps"} {
		broker.Register(s, broker.Driver{Binding: "amqp", Open: open})
	}
}

func open(ctx context.Context, url string, log *slog.Logger) (broker.Broker, error) {
	var opts []Option
	if log != nil {
		opts = append(opts, WithLogger(log))
	}
	return New(ctx, url, opts...)
}
