package aggregate_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/heraldhq/herald/aggregate"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/eventstore/memory"
)

// Order is the write model of the shop's order aggregate.
type Order struct {
	Placed, Shipped bool
	Total           int
}

var errRule = errors.New("order rule")

func applyOrder(o Order, e *event.Event) (Order, error) {
	switch e.Type {
	case "shop.order.placed.v1":
		var d struct{ Total int }
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return o, err
		}
		o.Placed, o.Total = true, d.Total
	case "shop.order.shipped.v1":
		o.Shipped = true
	}
	return o, nil
}

func place(total int) func(*aggregate.Aggregate[Order]) error {
	return func(a *aggregate.Aggregate[Order]) error {
		if a.State.Placed {
			return fmt.Errorf("%w: order %s is already placed", errRule, a.ID)
		}
		return a.Record("shop.order.placed.v1", map[string]int{"total": total})
	}
}

func ship(a *aggregate.Aggregate[Order]) error {
	if !a.State.Placed || a.State.Shipped {
		return fmt.Errorf("%w: order %s cannot ship (placed %v, shipped %v)", errRule, a.ID, a.State.Placed, a.State.Shipped)
	}
	return a.Record("shop.order.shipped.v1", struct{}{})
}

// The whole loop: commands on the write side, guards, and an order-summary
// read model built from the global order of events.
func Example() {
	ctx := context.Background()
	store := memory.New()
	orders, _ := aggregate.New(store, aggregate.Config[Order]{Name: "order", Source: "orders", Apply: applyOrder})

	_, _ = orders.Update(ctx, "1", place(30))
	_, _ = orders.Update(ctx, "2", place(12))
	_, _ = orders.Update(ctx, "1", ship)
	_, err := orders.Update(ctx, "1", ship)
	fmt.Println(err)

	summary := map[string]int{} // read model: orders by status
	for rec, err := range store.ReadAll(ctx, 0) {
		if err != nil {
			panic(err)
		}
		switch rec.Event.Type {
		case "shop.order.placed.v1":
			summary["placed"]++
		case "shop.order.shipped.v1":
			summary["placed"]--
			summary["shipped"]++
		}
	}
	fmt.Println(summary)
	// Output:
	// order rule: order 1 cannot ship (placed true, shipped true)
	// map[placed:1 shipped:1]
}
