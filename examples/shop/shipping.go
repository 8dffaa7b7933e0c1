package shop

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
)

// RunShipping runs the shipping service until ctx ends: it creates
// shipments (ShipmentCreated, in Protobuf) and cancels them. The warehouse
// never answers for the fraction Tuning.ShippingTimeoutRate of orders, so
// their saga times out. Shipments are the table shipments.
func RunShipping(ctx context.Context, env Env) error {
	env, err := env.check("shipping")
	if err != nil {
		return err
	}
	if err := migrate(ctx, env, "shipping",
		`CREATE TABLE IF NOT EXISTS shipments (order_id text PRIMARY KEY, tracking text NOT NULL, state text NOT NULL)`); err != nil {
		return err
	}
	types, err := Register(ctx, env.Registry)
	if err != nil {
		return err
	}
	u, err := newUnit(ctx, env, "shipping")
	if err != nil {
		return err
	}
	r, err := u.router("shipping", []string{TopicShippingCommands})
	if err != nil {
		return err
	}
	herald.Handle(r, types.CreateShipment, func(ctx context.Context, s Shipment, m *consumer.Message) error {
		if chance(env.Tuning.Seed, "shipping", s.OrderID, env.Tuning.ShippingTimeoutRate) {
			env.Logger.Debug("shop: the warehouse does not answer (demo failure)", "order", s.OrderID)
			return nil
		}
		return u.once(ctx, m.Event, func(tx pgx.Tx) ([]*event.Event, error) {
			state, err := shipment(ctx, tx, s.OrderID)
			if err != nil || state == "cancelled" {
				return nil, err // a late command for a cancelled shipment: nobody waits for it
			}
			s.Tracking = "TRK-" + s.OrderID
			if state == "" {
				if _, err := tx.Exec(ctx, "INSERT INTO shipments VALUES ($1, $2, 'created')", s.OrderID, s.Tracking); err != nil {
					return nil, err
				}
			}
			e, err := types.ShipmentCreated.New(types.ShipmentMessage(s))
			return one(e, err)
		})
	})
	herald.Handle(r, types.CancelShipment, func(ctx context.Context, s Shipment, m *consumer.Message) error {
		return u.once(ctx, m.Event, func(tx pgx.Tx) ([]*event.Event, error) {
			if _, err := tx.Exec(ctx, lockOrder, s.OrderID); err != nil {
				return nil, err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO shipments VALUES ($1, '', 'cancelled')
				ON CONFLICT (order_id) DO UPDATE SET state = 'cancelled'`, s.OrderID); err != nil {
				return nil, err
			}
			return one(types.ShipmentCancelled.New(s))
		})
	})
	return runAll(ctx, u.relay.Run, r.Run)
}

func shipment(ctx context.Context, tx pgx.Tx, orderID string) (string, error) {
	if _, err := tx.Exec(ctx, lockOrder, orderID); err != nil {
		return "", err
	}
	var state string
	err := tx.QueryRow(ctx, "SELECT state FROM shipments WHERE order_id = $1", orderID).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return state, err
}
