package consumer

import (
	"context"
	"fmt"
	"runtime/debug"
)

// Recover turns a panic in the handler into a failure (retried, then
// dead-lettered like any other) with the panic value and stack.
func Recover() Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, m *Message) (err error) {
			defer func() {
				if p := recover(); p != nil {
					err = fmt.Errorf("handler panicked: %v\n%s", p, debug.Stack())
				}
			}()
			return next(ctx, m)
		}
	}
}
