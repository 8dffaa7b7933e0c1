package schema_test

import (
	"context"
	"fmt"
	"time"
)

// pollUntil calls cond until it is true or ctx ends or 10s pass.
func pollUntil(ctx context.Context, what string, cond func() bool) error {
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}
