// Package shop is Herald's reference system: five small services that talk
// only through events. `herald dev` runs it against the embedded broker so
// the dashboard, metrics and dead-letter queue have something to show.
//
//	orders         publishes OrderPlaced (a load generator stands in for users)
//	payments       OrderPlaced   -> PaymentTaken, or PaymentFailed over the card limit
//	inventory      OrderPlaced   -> StockReserved
//	shipping       PaymentTaken  -> OrderShipped
//	notifications  OrderShipped  -> an e-mail; fails on purpose for every
//	               seventh order, so its events are retried and dead-lettered
package shop

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
)

// Topics the shop uses.
const (
	TopicOrders    = "shop.orders"
	TopicPayments  = "shop.payments"
	TopicInventory = "shop.inventory"
	TopicShipping  = "shop.shipping"
)

// Events.
type (
	// OrderPlaced: a customer placed an order.
	OrderPlaced struct {
		OrderID  string `json:"order_id"`
		Customer string `json:"customer"`
		SKU      string `json:"sku"`
		Quantity int    `json:"quantity"`
		Total    int    `json:"total_cents"`
	}
	// PaymentTaken: the order's card was charged.
	PaymentTaken struct {
		OrderID string `json:"order_id"`
		Amount  int    `json:"amount_cents"`
	}
	// PaymentFailed: the charge was refused.
	PaymentFailed struct {
		OrderID string `json:"order_id"`
		Reason  string `json:"reason"`
	}
	// StockReserved: the items are set aside.
	StockReserved struct {
		OrderID  string `json:"order_id"`
		SKU      string `json:"sku"`
		Quantity int    `json:"quantity"`
	}
	// OrderShipped: the parcel left the warehouse.
	OrderShipped struct {
		OrderID  string `json:"order_id"`
		Tracking string `json:"tracking"`
	}
)

// Event types, each bound to its topic.
var (
	Placed   = herald.Type[OrderPlaced]("shop.order.placed.v1", herald.OnTopic(TopicOrders), herald.FromSource("orders"))
	Taken    = herald.Type[PaymentTaken]("shop.payment.taken.v1", herald.OnTopic(TopicPayments), herald.FromSource("payments"))
	Failed   = herald.Type[PaymentFailed]("shop.payment.failed.v1", herald.OnTopic(TopicPayments), herald.FromSource("payments"))
	Reserved = herald.Type[StockReserved]("shop.stock.reserved.v1", herald.OnTopic(TopicInventory), herald.FromSource("inventory"))
	Shipped  = herald.Type[OrderShipped]("shop.order.shipped.v1", herald.OnTopic(TopicShipping), herald.FromSource("shipping"))
)

// CardLimit is the total above which payments are refused.
const CardLimit = 90000

// ErrMailRelay is the failure the notifications service produces on purpose.
var ErrMailRelay = errors.New("mail relay refused the message (demo failure)")

// Config tunes the shop.
type Config struct {
	// Rate of generated orders per second; 0 generates none. Default 0.
	Rate float64
	// Retry is the notifications service's retry policy; default 3 quick
	// attempts so failures reach the dead-letter queue in seconds.
	Retry *consumer.RetryPolicy
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Options are added to every router (observers, middleware...).
	Options []consumer.Option
}

// Stats counts what the services did.
type Stats struct {
	Placed, Charged, Refused, Reserved, Shipped, Notified, NotifyFailures atomic.Int64
}

// Shop is a running shop.
type Shop struct {
	c     *herald.Client
	cfg   Config
	Stats Stats
}

// New returns a shop on client c.
func New(c *herald.Client, cfg Config) *Shop {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Retry == nil {
		cfg.Retry = &consumer.RetryPolicy{MaxAttempts: 3, Backoff: consumer.Backoff{Initial: 500 * time.Millisecond, Max: 5 * time.Second, Multiplier: 2, Jitter: 0.2}}
	}
	return &Shop{c: c, cfg: cfg}
}

// Run starts the services (and the order generator when Rate > 0) and
// blocks until ctx is cancelled and they have stopped.
func (s *Shop) Run(ctx context.Context) error {
	routers := map[string]*consumer.Router{}
	add := func(group, topic string, extra ...consumer.Option) (*consumer.Router, error) {
		opts := append([]consumer.Option{consumer.WithStart(broker.FromFirst)}, s.cfg.Options...)
		r, err := s.c.Router(group, []string{topic}, append(opts, extra...)...)
		if err != nil {
			return nil, fmt.Errorf("shop: %s: %w", group, err)
		}
		routers[group] = r
		return r, nil
	}
	payments, err := add("payments", TopicOrders)
	if err != nil {
		return err
	}
	herald.Handle(payments, Placed, func(ctx context.Context, o OrderPlaced, m *consumer.Message) error {
		if o.Total > CardLimit {
			s.Stats.Refused.Add(1)
			return Failed.Publish(ctx, s.c, PaymentFailed{OrderID: o.OrderID, Reason: "over the card limit"}, herald.WithSubject(o.OrderID))
		}
		s.Stats.Charged.Add(1)
		return Taken.Publish(ctx, s.c, PaymentTaken{OrderID: o.OrderID, Amount: o.Total}, herald.WithSubject(o.OrderID))
	})
	inventory, err := add("inventory", TopicOrders)
	if err != nil {
		return err
	}
	herald.Handle(inventory, Placed, func(ctx context.Context, o OrderPlaced, m *consumer.Message) error {
		s.Stats.Reserved.Add(1)
		return Reserved.Publish(ctx, s.c, StockReserved{OrderID: o.OrderID, SKU: o.SKU, Quantity: o.Quantity}, herald.WithSubject(o.OrderID))
	})
	shipping, err := add("shipping", TopicPayments)
	if err != nil {
		return err
	}
	herald.Handle(shipping, Taken, func(ctx context.Context, p PaymentTaken, m *consumer.Message) error {
		s.Stats.Shipped.Add(1)
		return Shipped.Publish(ctx, s.c, OrderShipped{OrderID: p.OrderID, Tracking: "TRK-" + p.OrderID}, herald.WithSubject(p.OrderID))
	})
	shipping.Handle(Failed.Name(), func(context.Context, *consumer.Message) error { return nil }) // nothing to ship
	notifications, err := add("notifications", TopicShipping, consumer.WithRetry(*s.cfg.Retry))
	if err != nil {
		return err
	}
	herald.Handle(notifications, Shipped, func(ctx context.Context, o OrderShipped, m *consumer.Message) error {
		if n, err := strconv.Atoi(o.OrderID[len("o-"):]); err == nil && n%7 == 0 {
			s.Stats.NotifyFailures.Add(1)
			return fmt.Errorf("notify order %s: %w", o.OrderID, ErrMailRelay)
		}
		s.Stats.Notified.Add(1)
		return nil
	})

	var wg sync.WaitGroup
	errs := make(chan error, len(routers)+1)
	for group, r := range routers {
		wg.Go(func() {
			if err := r.Run(ctx); err != nil {
				errs <- fmt.Errorf("shop: %s: %w", group, err)
			}
		})
	}
	if s.cfg.Rate > 0 {
		wg.Go(func() {
			if err := s.generate(ctx); err != nil && ctx.Err() == nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	return errors.Join(collect(errs)...)
}

func collect(ch <-chan error) []error {
	var out []error
	for err := range ch {
		out = append(out, err)
	}
	return out
}

var skus = []string{"mug", "tee", "hoodie", "sticker", "poster"}

// generate places orders at the configured rate until ctx ends.
func (s *Shop) generate(ctx context.Context) error {
	t := time.NewTicker(time.Duration(float64(time.Second) / s.cfg.Rate))
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		id := "o-" + strconv.Itoa(n)
		o := OrderPlaced{
			OrderID:  id,
			Customer: "c-" + strconv.Itoa(rand.IntN(50)),
			SKU:      skus[rand.IntN(len(skus))],
			Quantity: 1 + rand.IntN(3),
			Total:    500 + rand.IntN(100000),
		}
		if err := Placed.Publish(ctx, s.c, o, herald.WithSubject(id), herald.WithCorrelationID("checkout-"+id)); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.cfg.Logger.Warn("shop: place order", "order", id, "error", err)
			continue
		}
		s.Stats.Placed.Add(1)
	}
}
