package shop

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// runAll runs fns until ctx ends or one fails; then it cancels the others
// and returns the errors.
func runAll(ctx context.Context, fns ...func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, fn := range fns {
		wg.Go(func() {
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				cancel()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// lockOrder serialises the transactions of one order.
const lockOrder = "SELECT pg_advisory_xact_lock(hashtext($1))"

func migrate(ctx context.Context, env Env, service string, ddl ...string) error {
	for _, q := range ddl {
		if _, err := env.DB.Exec(ctx, q); err != nil {
			return fmt.Errorf("shop: %s: create tables: %w", service, err)
		}
	}
	return nil
}
