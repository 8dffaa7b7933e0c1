package kafka

import (
	"context"
	"log/slog"

	"github.com/heraldhq/herald/broker"
)

// Importing the package registers the kafka:// scheme with broker.Register.
func init() {
	broker.Register(Scheme, broker.Driver{Binding: "kafka", Open: open})
}

func open(ctx context.Context, url string, log *slog.Logger) (broker.Broker, error) {
	opts, err := ParseURL(url)
	if err != nil {
		return nil, err
	}
	if log != nil {
		opts = append(opts, WithLogger(log))
	}
	return New(ctx, opts...)
}
