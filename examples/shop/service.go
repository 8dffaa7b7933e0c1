package shop

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/idempotency"
	"github.com/heraldhq/herald/idempotency/pgstore"
	"github.com/heraldhq/herald/outbox"
	"github.com/heraldhq/herald/schema/serde"
)

// Env is what a service of the shop runs on. Every service of one shop
// shares the broker, the registry and the database schema.
type Env struct {
	// Client publishes and consumes; its broker must be NATS JetStream
	// (the saga keeps its instances in a JetStream KV bucket). Required.
	Client *herald.Client
	// Registry is the schema registry. Required.
	Registry *serde.Client
	// DB is the shop's PostgreSQL database, its search_path set to the
	// shop's schema (see OpenDB). Required.
	DB *pgxpool.Pool
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Options are added to every router (observers, middleware...).
	Options []consumer.Option
	// Tuning sets the failure rates and timeouts; zero fields take the
	// defaults of DefaultTuning.
	Tuning Tuning
}

// Tuning sets how often things go wrong on purpose, and how fast the shop
// notices.
type Tuning struct {
	// PaymentFailRate is the fraction of charges refused. Default 0.1.
	// Negative: none.
	PaymentFailRate float64
	// ShippingTimeoutRate is the fraction of shipments the warehouse never
	// answers, so the saga times out, refunds and releases. Default 0.03.
	// Negative: none.
	ShippingTimeoutRate float64
	// ShippingTimeout is how long the saga waits for a shipment. Default 10s.
	ShippingTimeout time.Duration
	// StepTimeout is how long the saga waits for the other steps.
	// Default 2m: long enough for a service to be restarted.
	StepTimeout time.Duration
	// SMSFailEvery makes the SMS notifier fail the first delivery of one
	// order in that many, so the dead-letter queue is never empty (a
	// redrive heals them). Default 7. Negative: never.
	SMSFailEvery int
	// AckWait of the shop's groups: how soon a dead member's deliveries
	// go to another. Default 5s.
	AckWait time.Duration
	// SagaTick is how often the saga checks deadlines. Default 500ms.
	SagaTick time.Duration
	// ResendAfter is how long a saga command waits before it is re-sent.
	// Default 5s.
	ResendAfter time.Duration
	// Stock is the initial stock of each product. Default 1,000,000.
	Stock int
	// Seed varies which orders fail on purpose. Default "".
	Seed string
}

// DefaultTuning is the tuning of `herald dev`.
var DefaultTuning = Tuning{
	PaymentFailRate: 0.1, ShippingTimeoutRate: 0.03, ShippingTimeout: 10 * time.Second, StepTimeout: 2 * time.Minute,
	SMSFailEvery: 7, AckWait: 5 * time.Second, SagaTick: 500 * time.Millisecond, ResendAfter: 5 * time.Second, Stock: 1_000_000,
}

func (t Tuning) withDefaults() Tuning {
	d := DefaultTuning
	if t.PaymentFailRate == 0 {
		t.PaymentFailRate = d.PaymentFailRate
	}
	if t.ShippingTimeoutRate == 0 {
		t.ShippingTimeoutRate = d.ShippingTimeoutRate
	}
	if t.ShippingTimeout <= 0 {
		t.ShippingTimeout = d.ShippingTimeout
	}
	if t.StepTimeout <= 0 {
		t.StepTimeout = d.StepTimeout
	}
	if t.SMSFailEvery == 0 {
		t.SMSFailEvery = d.SMSFailEvery
	}
	if t.AckWait <= 0 {
		t.AckWait = d.AckWait
	}
	if t.SagaTick <= 0 {
		t.SagaTick = d.SagaTick
	}
	if t.ResendAfter <= 0 {
		t.ResendAfter = d.ResendAfter
	}
	if t.Stock <= 0 {
		t.Stock = d.Stock
	}
	return t
}

func (e Env) check(service string) (Env, error) {
	if e.Client == nil || e.Registry == nil || e.DB == nil {
		return e, fmt.Errorf("shop: %s: Env.Client, Env.Registry and Env.DB are required", service)
	}
	if e.Logger == nil {
		e.Logger = slog.Default()
	}
	e.Logger = e.Logger.With("service", service)
	e.Tuning = e.Tuning.withDefaults()
	return e, nil
}

// OpenDB connects to the PostgreSQL database at url with the shop's
// tables in schema, creating the schema if needed.
func OpenDB(ctx context.Context, url, schema string) (*pgxpool.Pool, error) {
	if err := validIdent(schema); err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("shop: postgres url: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig.Copy())
	if err != nil {
		return nil, fmt.Errorf("shop: cannot reach PostgreSQL at %s: %w", cfg.ConnConfig.Host, err)
	}
	_, err = conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+schema)
	_ = conn.Close(ctx)
	if err != nil {
		return nil, fmt.Errorf("shop: create schema %s: %w", schema, err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	if !strings.Contains(url, "pool_max_conns") {
		// Each outbox relay keeps a connection to LISTEN on, and every
		// handler runs a transaction: pgx's default of 4 is too few.
		cfg.MaxConns = 20
	}
	return pgxpool.NewWithConfig(ctx, cfg)
}

// DropSchema removes the shop's schema and everything in it.
func DropSchema(ctx context.Context, url, schema string) error {
	if err := validIdent(schema); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("shop: cannot reach PostgreSQL: %w", err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
	return err
}

func validIdent(s string) error {
	if s == "" || len(s) > 48 {
		return fmt.Errorf("shop: schema name %q: want 1 to 48 lower-case letters, digits and underscores", s)
	}
	for i, c := range s {
		if !(c >= 'a' && c <= 'z' || c == '_' || (i > 0 && c >= '0' && c <= '9')) {
			return fmt.Errorf("shop: schema name %q: want lower-case letters, digits and underscores, starting with a letter", s)
		}
	}
	return nil
}

// unit is what a service that answers commands has: an inbox, so each
// command takes effect once, and an outbox its replies go through in the
// same transaction.
type unit struct {
	env   Env
	group string
	inbox *pgstore.Store
	ob    *outbox.Outbox
	relay *outbox.Relay
}

func newUnit(ctx context.Context, env Env, service string) (*unit, error) {
	inbox, err := pgstore.New(ctx, env.DB, pgstore.WithTable(service+"_inbox"), pgstore.WithMigrate())
	if err != nil {
		return nil, fmt.Errorf("shop: %s inbox: %w", service, err)
	}
	ob, err := outbox.New(ctx, env.DB, outbox.WithTable(service+"_outbox"), outbox.WithMigrate())
	if err != nil {
		return nil, fmt.Errorf("shop: %s outbox: %w", service, err)
	}
	relay, err := outbox.NewRelay(ctx, env.DB, publisher{env.Client}, outbox.WithOutbox(ob),
		outbox.WithPollInterval(200*time.Millisecond), outbox.WithLogger(env.Logger))
	if err != nil {
		return nil, fmt.Errorf("shop: %s relay: %w", service, err)
	}
	return &unit{env: env, group: service, inbox: inbox, ob: ob, relay: relay}, nil
}

// router returns the service's router on topics.
func (u *unit) router(group string, topics []string, extra ...consumer.Option) (*consumer.Router, error) {
	opts := []consumer.Option{
		consumer.WithStart(broker.FromFirst),
		consumer.WithAckWait(u.env.Tuning.AckWait),
		consumer.WithLogger(u.env.Logger),
		consumer.WithRetry(consumer.RetryPolicy{MaxAttempts: 50, Backoff: consumer.Backoff{Initial: 100 * time.Millisecond, Max: 2 * time.Second, Multiplier: 2, Jitter: 0.2}}),
	}
	opts = append(append(opts, u.env.Options...), extra...)
	r, err := u.env.Client.Router(group, topics, opts...)
	if err != nil {
		return nil, fmt.Errorf("shop: %s: %w", group, err)
	}
	return r, nil
}

// inboxTTL is how long the inbox remembers a handled command: longer than
// the saga re-sends one.
const inboxTTL = 7 * 24 * time.Hour

// once runs fn for the command cmd at most once, in one transaction with
// the inbox record and the replies fn returns, which go out through the
// outbox as answers to cmd. A command handled before is acknowledged
// without running fn.
func (u *unit) once(ctx context.Context, cmd *event.Event, fn func(tx pgx.Tx) ([]*event.Event, error)) error {
	err := u.inbox.Once(ctx, u.group+"/"+cmd.ID, inboxTTL, func(tx pgx.Tx) error {
		replies, err := fn(tx)
		if err != nil {
			return err
		}
		for _, r := range replies {
			answer(cmd, r)
		}
		if len(replies) == 0 {
			return nil
		}
		return u.ob.Add(ctx, tx, replies...)
	})
	if errors.Is(err, idempotency.ErrDuplicate) {
		return nil
	}
	return err
}

// answer makes r the reply to cmd: same correlation, caused by cmd, and an
// id derived from both so a reply written twice is stored once.
func answer(cmd, r *event.Event) {
	r.CorrelationID = cmd.CorrelationID
	r.CausationID = cmd.ID
	r.ID = uuid.NewSHA1(uuid.NameSpaceOID, []byte(cmd.ID+"/"+r.Type)).String()
	if r.Subject == "" {
		r.Subject = cmd.Subject
	}
	if r.Extensions == nil {
		r.Extensions = map[string]string{}
	}
	r.Extensions[consumer.ExtDepth] = strconv.Itoa(consumer.Depth(cmd) + 1)
}

// publisher publishes events to the shop's topics.
type publisher struct{ c *herald.Client }

func (p publisher) Publish(ctx context.Context, events ...*event.Event) error {
	var order []string
	by := map[string][]*event.Event{}
	for _, e := range events {
		t, ok := Topics[e.Type]
		if !ok {
			t = p.c.TopicFor(e.Type)
		}
		if _, seen := by[t]; !seen {
			order = append(order, t)
		}
		by[t] = append(by[t], e)
	}
	for _, t := range order {
		if err := p.c.PublishTo(ctx, t, by[t]...); err != nil {
			return err
		}
	}
	return nil
}

// chance reports whether the order falls in the fraction rate of orders
// picked for a failure of kind: the same order always gets the same
// answer, so a retried command fails the same way.
func chance(seed, kind, orderID string, rate float64) bool {
	if rate <= 0 {
		return false
	}
	h := sha256.Sum256([]byte(seed + "/" + kind + "/" + orderID))
	return float64(binary.BigEndian.Uint64(h[:8])>>11)/float64(1<<53) < rate
}
