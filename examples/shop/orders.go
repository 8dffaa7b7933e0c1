package shop

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/aggregate"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/eventstore"
	"github.com/heraldhq/herald/eventstore/postgres"
	"github.com/heraldhq/herald/projection"
	"github.com/heraldhq/herald/saga"
)

// Order statuses.
const (
	StatusPlaced    = "placed"
	StatusShipped   = "shipped"
	StatusCancelled = "cancelled"
)

// SagaName is the name of the order saga.
const SagaName = "order"

// Order is the state of the event-sourced order aggregate.
type Order struct {
	ID, Customer, SKU string
	Quantity, Total   int
	Status            string
	Tracking, Reason  string
	CorrelationID     string
}

// Errors of the order aggregate's guards.
var (
	// ErrOrderExists: place on an order that has events already.
	ErrOrderExists = errors.New("shop: order already exists")
	// ErrNoOrder: a command for an order that was never placed.
	ErrNoOrder = errors.New("shop: no such order")
	// ErrOrderClosed: ship of a cancelled order, or cancel of a shipped one.
	ErrOrderClosed = errors.New("shop: order is closed")
)

// Orders is the orders service: the order aggregate, event-sourced in
// PostgreSQL, whose events go out through the outbox in the transaction
// that stores them; the order-summary read model (a projection); and the
// order saga's engine. Its HTTP API is Handler.
type Orders struct {
	env   Env
	types *Types
	store *postgres.Store
	repo  *aggregate.Repository[Order]
	u     *unit
	proj  *projection.Projector
	eng   *saga.Engine
	saga  *consumer.Router
	cmds  *consumer.Router
}

// NewOrders sets the orders service up: tables, schemas, saga bucket.
func NewOrders(ctx context.Context, env Env) (*Orders, error) {
	env, err := env.check("orders")
	if err != nil {
		return nil, err
	}
	o := &Orders{env: env}
	if o.types, err = Register(ctx, env.Registry); err != nil {
		return nil, err
	}
	if o.store, err = postgres.New(ctx, env.DB, postgres.WithMigrate()); err != nil {
		return nil, fmt.Errorf("shop: orders event store: %w", err)
	}
	if o.repo, err = aggregate.New(o.store, aggregate.Config[Order]{Name: "order", Source: "orders", Apply: o.apply}); err != nil {
		return nil, err
	}
	if o.u, err = newUnit(ctx, env, "orders"); err != nil {
		return nil, err
	}
	if o.proj, err = projection.New(ctx, env.DB, o.store, projection.Config{Name: "order_summary", Create: summaryTable, Handle: o.project}); err != nil {
		return nil, fmt.Errorf("shop: order summary: %w", err)
	}
	js, ok := env.Client.Broker().(interface{ JetStream() jetstream.JetStream })
	if !ok {
		return nil, fmt.Errorf("shop: orders: the saga needs a NATS JetStream broker, not %T", env.Client.Broker())
	}
	sagas, err := saga.NewKVStore(ctx, js.JetStream(), saga.DefaultBucket)
	if err != nil {
		return nil, fmt.Errorf("shop: saga store: %w", err)
	}
	if o.eng, err = saga.New(sagas, publisher{env.Client}, []saga.Definition{o.definition()},
		saga.WithLogger(env.Logger), saga.WithTick(env.Tuning.SagaTick), saga.WithResendAfter(env.Tuning.ResendAfter)); err != nil {
		return nil, err
	}
	if o.saga, err = o.u.router("order-saga", []string{TopicOrders, TopicInventory, TopicPayments, TopicShipping}); err != nil {
		return nil, err
	}
	herald.Handle(o.saga, o.types.OrderPlaced, func(ctx context.Context, p OrderPlaced, m *consumer.Message) error {
		err := o.eng.Start(ctx, SagaName, m.Event.CorrelationID, p)
		if errors.Is(err, saga.ErrExists) {
			return nil
		}
		return err
	})
	o.saga.HandleAll(func(ctx context.Context, m *consumer.Message) error { return o.eng.HandleReply(ctx, m.Event) })
	if o.cmds, err = o.u.router("orders", []string{TopicOrderCommands}); err != nil {
		return nil, err
	}
	herald.Handle(o.cmds, o.types.AcceptOrder, func(ctx context.Context, r OrderRef, m *consumer.Message) error {
		return o.u.once(ctx, m.Event, func(pgx.Tx) ([]*event.Event, error) { return one(o.types.OrderAccepted.New(r)) })
	})
	herald.Handle(o.cmds, o.types.ShipOrder, func(ctx context.Context, s OrderShipped, m *consumer.Message) error {
		return o.command(ctx, m.Event, s.OrderID, func(a *aggregate.Aggregate[Order]) (*event.Event, error) {
			switch a.State.Status {
			case StatusShipped:
				return o.types.OrderShipped.New(OrderShipped{OrderID: a.ID, Tracking: a.State.Tracking})
			case StatusCancelled:
				return nil, fmt.Errorf("ship order %s: %w: it was cancelled", a.ID, ErrOrderClosed)
			}
			e, err := o.types.OrderShipped.New(s)
			if err == nil {
				err = a.RecordEvent(e)
			}
			return nil, err
		})
	})
	herald.Handle(o.cmds, o.types.CancelOrder, func(ctx context.Context, c OrderCancelled, m *consumer.Message) error {
		return o.command(ctx, m.Event, c.OrderID, func(a *aggregate.Aggregate[Order]) (*event.Event, error) {
			switch a.State.Status {
			case StatusCancelled:
				return o.types.OrderCancelled.New(OrderCancelled{OrderID: a.ID, Reason: a.State.Reason})
			case StatusShipped:
				return nil, fmt.Errorf("cancel order %s: %w: it was shipped", a.ID, ErrOrderClosed)
			}
			e, err := o.types.OrderCancelled.New(c)
			if err == nil {
				err = a.RecordEvent(e)
			}
			return nil, err
		})
	})
	return o, nil
}

// Run runs the service until ctx ends: the outbox relay, the projection,
// the saga engine and its consumers.
func (o *Orders) Run(ctx context.Context) error {
	return runAll(ctx, o.u.relay.Run, o.proj.Run, o.eng.Run, o.saga.Run, o.cmds.Run)
}

// Engine returns the order saga's engine.
func (o *Orders) Engine() *saga.Engine { return o.eng }

// Store returns the event store the orders live in.
func (o *Orders) Store() eventstore.Store { return o.store }

// Load returns order id as the event store has it.
func (o *Orders) Load(ctx context.Context, id string) (Order, uint64, error) {
	a, err := o.repo.Load(ctx, id)
	if err != nil {
		return Order{}, 0, err
	}
	if a.Version == 0 {
		return Order{}, 0, fmt.Errorf("order %s: %w", id, ErrNoOrder)
	}
	return a.State, a.Version, nil
}

func (o *Orders) apply(s Order, e *event.Event) (Order, error) {
	ctx := context.Background()
	switch e.Type {
	case TypeOrderPlaced:
		p, err := o.types.OrderPlaced.Decode(ctx, e)
		if err != nil {
			return s, err
		}
		return Order{ID: p.OrderID, Customer: p.Customer, SKU: p.SKU, Quantity: p.Quantity, Total: p.Total,
			Status: StatusPlaced, CorrelationID: e.CorrelationID}, nil
	case TypeOrderShipped:
		v, err := o.types.OrderShipped.Decode(ctx, e)
		if err != nil {
			return s, err
		}
		s.Status, s.Tracking = StatusShipped, v.Tracking
	case TypeOrderCancelled:
		v, err := o.types.OrderCancelled.Decode(ctx, e)
		if err != nil {
			return s, err
		}
		s.Status, s.Reason = StatusCancelled, v.Reason
	default:
		return s, fmt.Errorf("order %s: unknown event type %s", s.ID, e.Type)
	}
	return s, nil
}

// PlaceRequest is the body of POST /orders.
type PlaceRequest struct {
	Customer string `json:"customer"`
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
	Total    int    `json:"total_cents"`
}

// ErrInvalidOrder wraps what is wrong with a PlaceRequest.
var ErrInvalidOrder = errors.New("invalid order")

func (r PlaceRequest) validate() error {
	known := false
	for _, p := range Products {
		known = known || p == r.SKU
	}
	switch {
	case r.Customer == "" || len(r.Customer) > 100:
		return fmt.Errorf("%w: customer: want 1 to 100 characters", ErrInvalidOrder)
	case !known:
		return fmt.Errorf("%w: sku %q: want one of %v", ErrInvalidOrder, r.SKU, Products)
	case r.Quantity < 1 || r.Quantity > 100:
		return fmt.Errorf("%w: quantity %d: want 1 to 100", ErrInvalidOrder, r.Quantity)
	case r.Total < 1 || r.Total > 10_000_000:
		return fmt.Errorf("%w: total_cents %d: want 1 to 10000000", ErrInvalidOrder, r.Total)
	}
	return nil
}

// Placed is the answer to POST /orders.
type Placed struct {
	ID            string `json:"id"`
	CorrelationID string `json:"correlation_id"`
	Status        string `json:"status"`
}

// Place places an order: OrderPlaced is stored as the first event of the
// order's stream and added to the outbox in one transaction; the saga
// starts when it is published.
func (o *Orders) Place(ctx context.Context, r PlaceRequest) (Placed, error) {
	if err := r.validate(); err != nil {
		return Placed{}, err
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := "o-" + hex.EncodeToString(b[:])
	corr := "checkout-" + hex.EncodeToString(b[:])
	e, err := o.types.OrderPlaced.New(OrderPlaced{OrderID: id, Customer: r.Customer, SKU: r.SKU, Quantity: r.Quantity, Total: r.Total},
		herald.WithSubject(id), herald.WithCorrelationID(corr))
	if err != nil {
		return Placed{}, err
	}
	a, err := o.repo.Load(ctx, id)
	if err != nil {
		return Placed{}, err
	}
	if a.Version != 0 {
		return Placed{}, fmt.Errorf("place order %s: %w", id, ErrOrderExists)
	}
	if err := a.RecordEvent(e); err != nil {
		return Placed{}, err
	}
	err = pgx.BeginFunc(ctx, o.env.DB, func(tx pgx.Tx) error { return o.save(ctx, tx, a) })
	if err != nil {
		return Placed{}, fmt.Errorf("place order %s: %w", id, err)
	}
	return Placed{ID: id, CorrelationID: corr, Status: StatusPlaced}, nil
}

// save appends a's new events and adds them to the outbox, in tx.
func (o *Orders) save(ctx context.Context, tx pgx.Tx, a *aggregate.Aggregate[Order]) error {
	pending := a.Pending()
	if _, err := o.store.AppendTx(ctx, tx, a.Stream, eventstore.Exact(a.Version), pending...); err != nil {
		return err
	}
	return o.u.ob.Add(ctx, tx, pending...)
}

// command runs a saga command on order id once: decide records the
// order's new event (the reply), or returns the reply to send when the
// order is already where the command wants it. Version conflicts retry.
func (o *Orders) command(ctx context.Context, cmd *event.Event, id string, decide func(*aggregate.Aggregate[Order]) (*event.Event, error)) error {
	for attempt := 0; ; attempt++ {
		err := o.u.once(ctx, cmd, func(tx pgx.Tx) ([]*event.Event, error) {
			a, err := o.repo.Load(ctx, id)
			if err != nil {
				return nil, err
			}
			if a.Version == 0 {
				return nil, fmt.Errorf("order %s: %w", id, ErrNoOrder)
			}
			again, err := decide(a)
			if err != nil || again != nil {
				return []*event.Event{again}, err
			}
			for _, e := range a.Pending() {
				answer(cmd, e)
				e.Subject = id
			}
			return nil, o.save(ctx, tx, a)
		})
		if errors.Is(err, eventstore.ErrConflict) && attempt < 10 {
			continue
		}
		if errors.Is(err, ErrNoOrder) || errors.Is(err, ErrOrderClosed) {
			return consumer.Permanent(err) // no retry changes it: to the dead-letter queue
		}
		return err
	}
}

// definition is the order saga: accept, reserve stock, charge, ship,
// complete; a failure compensates in reverse order, ending with the
// order cancelled.
func (o *Orders) definition() saga.Definition {
	t := o.types
	data := func(in *saga.Instance) (OrderPlaced, error) {
		var p OrderPlaced
		err := json.Unmarshal(in.Data, &p)
		return p, err
	}
	cmd := func(build func(p OrderPlaced, in *saga.Instance) (*event.Event, error)) saga.CommandFunc {
		return func(_ context.Context, in *saga.Instance) (*event.Event, error) {
			p, err := data(in)
			if err != nil {
				return nil, err
			}
			e, err := build(p, in)
			if err != nil {
				return nil, err
			}
			e.Subject = p.OrderID
			return e, nil
		}
	}
	tuning := o.env.Tuning
	return saga.Definition{Name: SagaName, Steps: []saga.Step{
		{
			Name: "accept",
			Command: cmd(func(p OrderPlaced, _ *saga.Instance) (*event.Event, error) {
				return t.AcceptOrder.New(OrderRef{OrderID: p.OrderID})
			}),
			Done: []string{TypeOrderAccepted}, Timeout: tuning.StepTimeout,
			Compensate: cmd(func(p OrderPlaced, in *saga.Instance) (*event.Event, error) {
				return t.CancelOrder.New(OrderCancelled{OrderID: p.OrderID, Reason: in.Error})
			}),
			Compensated: []string{TypeOrderCancelled},
		},
		{
			Name: "reserve",
			Command: cmd(func(p OrderPlaced, _ *saga.Instance) (*event.Event, error) {
				return t.ReserveStock.New(Stock{OrderID: p.OrderID, SKU: p.SKU, Quantity: p.Quantity}, herald.WithKey(p.SKU))
			}),
			Done: []string{TypeStockReserved}, Failed: []string{TypeStockUnavailable}, Timeout: tuning.StepTimeout,
			Compensate: cmd(func(p OrderPlaced, _ *saga.Instance) (*event.Event, error) {
				return t.ReleaseStock.New(Stock{OrderID: p.OrderID, SKU: p.SKU, Quantity: p.Quantity}, herald.WithKey(p.SKU))
			}),
			Compensated: []string{TypeStockReleased},
		},
		{
			Name: "charge",
			Command: cmd(func(p OrderPlaced, _ *saga.Instance) (*event.Event, error) {
				return t.ChargePayment.New(Payment{OrderID: p.OrderID, Amount: p.Total})
			}),
			Done: []string{TypePaymentTaken}, Failed: []string{TypePaymentFailed}, Timeout: tuning.StepTimeout,
			Compensate: cmd(func(p OrderPlaced, _ *saga.Instance) (*event.Event, error) {
				return t.RefundPayment.New(Payment{OrderID: p.OrderID, Amount: p.Total})
			}),
			Compensated: []string{TypePaymentRefunded},
		},
		{
			Name: "ship",
			Command: cmd(func(p OrderPlaced, _ *saga.Instance) (*event.Event, error) {
				return t.CreateShipment.New(Shipment{OrderID: p.OrderID, SKU: p.SKU, Quantity: p.Quantity})
			}),
			Done: []string{TypeShipmentCreated}, Timeout: tuning.ShippingTimeout,
			Compensate: cmd(func(p OrderPlaced, _ *saga.Instance) (*event.Event, error) {
				return t.CancelShipment.New(Shipment{OrderID: p.OrderID})
			}),
			Compensated: []string{TypeShipmentCancelled},
		},
		{
			Name: "complete",
			Command: cmd(func(p OrderPlaced, _ *saga.Instance) (*event.Event, error) {
				return t.ShipOrder.New(OrderShipped{OrderID: p.OrderID, Tracking: "TRK-" + p.OrderID})
			}),
			Done: []string{TypeOrderShipped}, Timeout: tuning.StepTimeout, NoCompensation: true,
		},
	}}
}

// Summary is a row of the order-summary read model.
type Summary struct {
	ID            string    `json:"id"`
	Customer      string    `json:"customer"`
	SKU           string    `json:"sku"`
	Quantity      int       `json:"quantity"`
	Total         int       `json:"total_cents"`
	Status        string    `json:"status"`
	Tracking      string    `json:"tracking,omitempty"`
	Reason        string    `json:"reason,omitempty"`
	CorrelationID string    `json:"correlation_id"`
	Version       uint64    `json:"version"`
	Updated       time.Time `json:"updated"`
}

func summaryTable(table string) string {
	return "CREATE TABLE " + table + ` (id text PRIMARY KEY, customer text NOT NULL, sku text NOT NULL,
		quantity int NOT NULL, total_cents int NOT NULL, status text NOT NULL, tracking text NOT NULL DEFAULT '',
		reason text NOT NULL DEFAULT '', correlation_id text NOT NULL, version bigint NOT NULL, updated timestamptz NOT NULL);
		CREATE INDEX ON ` + table + " (status)"
}

func (o *Orders) project(ctx context.Context, tx pgx.Tx, table string, rec *eventstore.Record) error {
	e := rec.Event
	var err error
	switch e.Type {
	case TypeOrderPlaced:
		var p OrderPlaced
		if p, err = o.types.OrderPlaced.Decode(ctx, e); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "INSERT INTO "+table+` VALUES ($1, $2, $3, $4, $5, 'placed', '', '', $6, $7, $8)
			ON CONFLICT (id) DO NOTHING`, p.OrderID, p.Customer, p.SKU, p.Quantity, p.Total, e.CorrelationID, rec.Version, rec.Recorded)
	case TypeOrderShipped:
		var s OrderShipped
		if s, err = o.types.OrderShipped.Decode(ctx, e); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "UPDATE "+table+" SET status = 'shipped', tracking = $2, version = $3, updated = $4 WHERE id = $1",
			s.OrderID, s.Tracking, rec.Version, rec.Recorded)
	case TypeOrderCancelled:
		var c OrderCancelled
		if c, err = o.types.OrderCancelled.Decode(ctx, e); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "UPDATE "+table+" SET status = 'cancelled', reason = $2, version = $3, updated = $4 WHERE id = $1",
			c.OrderID, c.Reason, rec.Version, rec.Recorded)
	}
	return err
}

const summaryColumns = "id, customer, sku, quantity, total_cents, status, tracking, reason, correlation_id, version, updated"

func scanSummary(row pgx.Row) (Summary, error) {
	var s Summary
	err := row.Scan(&s.ID, &s.Customer, &s.SKU, &s.Quantity, &s.Total, &s.Status, &s.Tracking, &s.Reason, &s.CorrelationID, &s.Version, &s.Updated)
	return s, err
}

// Summary returns order id from the read model, or ErrNoOrder.
func (o *Orders) Summary(ctx context.Context, id string) (Summary, error) {
	s, err := scanSummary(o.env.DB.QueryRow(ctx, "SELECT "+summaryColumns+" FROM order_summary WHERE id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return s, fmt.Errorf("order %s: %w", id, ErrNoOrder)
	}
	return s, err
}

// List returns up to limit orders from the read model, newest first, of
// one status or of any ("").
func (o *Orders) List(ctx context.Context, status string, limit int) ([]Summary, error) {
	rows, err := o.env.DB.Query(ctx, "SELECT "+summaryColumns+" FROM order_summary WHERE $1 = '' OR status = $1 ORDER BY updated DESC, id LIMIT $2", status, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Summary{}
	for rows.Next() {
		s, err := scanSummary(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// Counts returns how many orders the read model has in each status.
func (o *Orders) Counts(ctx context.Context) (map[string]int64, error) {
	rows, err := o.env.DB.Query(ctx, "SELECT status, count(*) FROM order_summary GROUP BY status")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var s string
		var n int64
		if err := rows.Scan(&s, &n); err != nil {
			return nil, err
		}
		out[s] = n
	}
	return out, rows.Err()
}
