package shop

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
)

// Products are the SKUs the shop sells.
var Products = []string{"mug", "tee", "hoodie", "sticker", "poster"}

// RunInventory runs the inventory service until ctx ends: it reserves and
// releases stock on the saga's commands, which arrive in order per product
// (their partition key is the SKU). Stock is the table inventory_stock,
// reservations inventory_reservations (state reserved or released).
func RunInventory(ctx context.Context, env Env) error {
	env, err := env.check("inventory")
	if err != nil {
		return err
	}
	if err := migrate(ctx, env, "inventory",
		`CREATE TABLE IF NOT EXISTS inventory_stock (sku text PRIMARY KEY, available int NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS inventory_reservations (order_id text PRIMARY KEY, sku text NOT NULL,
			quantity int NOT NULL, state text NOT NULL)`); err != nil {
		return err
	}
	for _, sku := range Products {
		if _, err := env.DB.Exec(ctx, "INSERT INTO inventory_stock VALUES ($1, $2) ON CONFLICT DO NOTHING", sku, env.Tuning.Stock); err != nil {
			return err
		}
	}
	types, err := Register(ctx, env.Registry)
	if err != nil {
		return err
	}
	u, err := newUnit(ctx, env, "inventory")
	if err != nil {
		return err
	}
	r, err := u.router("inventory", []string{TopicInventoryCommands})
	if err != nil {
		return err
	}
	herald.Handle(r, types.ReserveStock, func(ctx context.Context, s Stock, m *consumer.Message) error {
		return u.once(ctx, m.Event, func(tx pgx.Tx) ([]*event.Event, error) {
			state, err := reservation(ctx, tx, s.OrderID)
			if err != nil {
				return nil, err
			}
			switch state {
			case "reserved":
				return one(types.StockReserved.New(s))
			case "released":
				return one(types.StockUnavailable.New(s))
			}
			tag, err := tx.Exec(ctx, "UPDATE inventory_stock SET available = available - $2 WHERE sku = $1 AND available >= $2", s.SKU, s.Quantity)
			if err != nil {
				return nil, err
			}
			if tag.RowsAffected() == 0 || s.Quantity <= 0 {
				return one(types.StockUnavailable.New(s))
			}
			if _, err := tx.Exec(ctx, "INSERT INTO inventory_reservations VALUES ($1, $2, $3, 'reserved')", s.OrderID, s.SKU, s.Quantity); err != nil {
				return nil, err
			}
			return one(types.StockReserved.New(s))
		})
	})
	herald.Handle(r, types.ReleaseStock, func(ctx context.Context, s Stock, m *consumer.Message) error {
		return u.once(ctx, m.Event, func(tx pgx.Tx) ([]*event.Event, error) {
			state, err := reservation(ctx, tx, s.OrderID)
			if err != nil {
				return nil, err
			}
			switch state {
			case "reserved":
				if _, err := tx.Exec(ctx, `UPDATE inventory_stock SET available = available + r.quantity
					FROM inventory_reservations r WHERE r.order_id = $1 AND inventory_stock.sku = r.sku`, s.OrderID); err != nil {
					return nil, err
				}
				_, err = tx.Exec(ctx, "UPDATE inventory_reservations SET state = 'released' WHERE order_id = $1", s.OrderID)
			case "":
				// Nothing reserved yet: remember the release so a late
				// reservation is refused.
				_, err = tx.Exec(ctx, "INSERT INTO inventory_reservations VALUES ($1, $2, 0, 'released')", s.OrderID, s.SKU)
			}
			if err != nil {
				return nil, err
			}
			return one(types.StockRelease.New(s))
		})
	})
	return runAll(ctx, u.relay.Run, r.Run)
}

// reservation locks the order's reservation and returns its state ("" if none).
func reservation(ctx context.Context, tx pgx.Tx, orderID string) (string, error) {
	if _, err := tx.Exec(ctx, lockOrder, orderID); err != nil {
		return "", err
	}
	var state string
	err := tx.QueryRow(ctx, "SELECT state FROM inventory_reservations WHERE order_id = $1", orderID).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return state, err
}
