package consumer

import (
	"context"
	"fmt"
)

// MaxDepth dead-letters events whose causation depth is over limit: when
// handlers keep publishing events that trigger each other, the chain stops
// there instead of flooding the broker.
func MaxDepth(limit int) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, m *Message) error {
			if d := m.Depth(); d > limit {
				return Permanent(fmt.Errorf("causation depth %d exceeds the limit of %d (event storm guard)", d, limit))
			}
			return next(ctx, m)
		}
	}
}
