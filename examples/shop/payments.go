package shop

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
)

// RunPayments runs the payments service until ctx ends: it charges and
// refunds orders on the saga's commands, each command once (the inbox
// commits with the ledger row and the reply), refusing the fraction
// Tuning.PaymentFailRate of charges. The ledger is the table
// payments_ledger: one row per charge, refund or void.
func RunPayments(ctx context.Context, env Env) error {
	env, err := env.check("payments")
	if err != nil {
		return err
	}
	if err := migrate(ctx, env, "payments", `CREATE TABLE IF NOT EXISTS payments_ledger (
		id bigserial PRIMARY KEY, order_id text NOT NULL, kind text NOT NULL, amount_cents int NOT NULL,
		at timestamptz NOT NULL DEFAULT now())`,
		`CREATE INDEX IF NOT EXISTS payments_ledger_order ON payments_ledger (order_id)`); err != nil {
		return err
	}
	types, err := Register(ctx, env.Registry)
	if err != nil {
		return err
	}
	u, err := newUnit(ctx, env, "payments")
	if err != nil {
		return err
	}
	r, err := u.router("payments", []string{TopicPaymentCommands})
	if err != nil {
		return err
	}
	herald.Handle(r, types.ChargePayment, func(ctx context.Context, p Payment, m *consumer.Message) error {
		return u.once(ctx, m.Event, func(tx pgx.Tx) ([]*event.Event, error) {
			charged, voided, err := ledger(ctx, tx, p.OrderID)
			if err != nil {
				return nil, err
			}
			switch {
			case voided:
				p.Reason = "the order was refunded before the charge arrived"
			case charged:
				return one(types.PaymentTaken.New(p))
			case chance(env.Tuning.Seed, "payment", p.OrderID, env.Tuning.PaymentFailRate):
				p.Reason = "card declined (demo failure)"
			default:
				if _, err := tx.Exec(ctx, "INSERT INTO payments_ledger (order_id, kind, amount_cents) VALUES ($1, 'charge', $2)", p.OrderID, p.Amount); err != nil {
					return nil, err
				}
				return one(types.PaymentTaken.New(p))
			}
			return one(types.PaymentFailed.New(p))
		})
	})
	herald.Handle(r, types.RefundPayment, func(ctx context.Context, p Payment, m *consumer.Message) error {
		return u.once(ctx, m.Event, func(tx pgx.Tx) ([]*event.Event, error) {
			charged, voided, err := ledger(ctx, tx, p.OrderID)
			if err != nil {
				return nil, err
			}
			switch {
			case charged && !voided:
				_, err = tx.Exec(ctx, `INSERT INTO payments_ledger (order_id, kind, amount_cents)
					SELECT order_id, 'refund', amount_cents FROM payments_ledger WHERE order_id = $1 AND kind = 'charge'`, p.OrderID)
			case !charged && !voided:
				// Nothing was charged: void the order so a late charge is refused.
				_, err = tx.Exec(ctx, "INSERT INTO payments_ledger (order_id, kind, amount_cents) VALUES ($1, 'void', 0)", p.OrderID)
			}
			if err != nil {
				return nil, err
			}
			return one(types.PaymentRefunded.New(p))
		})
	})
	return runAll(ctx, u.relay.Run, r.Run)
}

// ledger locks the order's payments and says whether it was charged, and
// refunded or voided.
func ledger(ctx context.Context, tx pgx.Tx, orderID string) (charged, voided bool, err error) {
	if _, err := tx.Exec(ctx, lockOrder, orderID); err != nil {
		return false, false, err
	}
	err = tx.QueryRow(ctx, `SELECT coalesce(bool_or(kind = 'charge'), false), coalesce(bool_or(kind <> 'charge'), false)
		FROM payments_ledger WHERE order_id = $1`, orderID).Scan(&charged, &voided)
	return charged, voided, err
}

func one(e *event.Event, err error) ([]*event.Event, error) {
	if err != nil {
		return nil, err
	}
	return []*event.Event{e}, nil
}
