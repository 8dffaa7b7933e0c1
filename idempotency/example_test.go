package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald/idempotency"
)

// The life of one key as the consumer runtime drives it.
func ExampleNewMemory() {
	ctx := context.Background()
	store := idempotency.NewMemory()
	key := "billing/evt-1"

	fmt.Println(store.Claim(ctx, key, time.Minute)) // first delivery: run the handler
	err := store.Claim(ctx, key, time.Minute)       // a redelivery while it runs
	fmt.Println(errors.Is(err, idempotency.ErrInProgress))
	fmt.Println(store.Complete(ctx, key, 24*time.Hour)) // handler succeeded
	err = store.Claim(ctx, key, time.Minute)            // a later duplicate
	fmt.Println(errors.Is(err, idempotency.ErrDuplicate))
	// Output:
	// <nil>
	// true
	// <nil>
	// true
}
