// Package shop is Herald's reference system: five services that talk only
// through events, using every pattern Herald offers together.
//
//	orders         an event-sourced order aggregate (place, ship, cancel) in
//	               PostgreSQL whose events leave through the outbox; the
//	               order-summary read model (a projection) behind an HTTP
//	               API; and the order saga: accept -> reserve stock ->
//	               charge -> create shipment -> complete, compensated in
//	               reverse order when a step fails or times out
//	inventory      reservations, in order per product
//	payments       charges exactly once per order (inbox + outbox in one
//	               transaction); refuses a fraction of charges
//	shipping       creates shipments (a Protobuf event); never answers for a
//	               fraction of orders, so their saga times out and refunds
//	notifications  e-mail, SMS and push as separate consumer groups; the SMS
//	               one fails on purpose so the dead-letter queue has work
//
// OrderPlaced is an Avro event, ShipmentCreated a Protobuf one, the others
// JSON Schema; all are registered at start and validated at publish. Each
// service runs on its own (cmd/orders, cmd/payments...: `go run
// ./examples/shop/cmd/payments --url nats://...`), or all in one process
// with Shop, which is what `herald dev` does.
package shop

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"
)

// Services are the shop's services, by name.
var Services = []string{"orders", "inventory", "payments", "shipping", "notifications"}

// Config configures a Shop.
type Config struct {
	Env
	// Services to run; default all of Services.
	Services []string
	// OrdersAddr is where the orders API listens. Default 127.0.0.1:0.
	OrdersAddr string
	// Rate of orders per second the load generator places; 0: none.
	Rate float64
}

// Shop is the shop in one process.
type Shop struct {
	cfg      Config
	orders   *Orders
	ln       net.Listener
	Notified Notified
	// Generated counts the orders the load generator placed.
	Generated atomic.Int64
}

// New sets the shop up (tables, schemas, the orders API's listener)
// without starting it.
func New(ctx context.Context, cfg Config) (*Shop, error) {
	if len(cfg.Services) == 0 {
		cfg.Services = Services
	}
	for _, s := range cfg.Services {
		if !slices.Contains(Services, s) {
			return nil, fmt.Errorf("shop: unknown service %q: want one of %v", s, Services)
		}
	}
	if cfg.Rate < 0 {
		return nil, fmt.Errorf("shop: rate %g: must not be negative", cfg.Rate)
	}
	if cfg.Rate > 0 && !slices.Contains(cfg.Services, "orders") {
		return nil, errors.New("shop: the load generator needs the orders service")
	}
	s := &Shop{cfg: cfg}
	if slices.Contains(cfg.Services, "orders") {
		o, err := NewOrders(ctx, cfg.Env)
		if err != nil {
			return nil, err
		}
		s.orders = o
		addr := cfg.OrdersAddr
		if addr == "" {
			addr = "127.0.0.1:0"
		}
		if s.ln, err = net.Listen("tcp", addr); err != nil {
			return nil, fmt.Errorf("shop: orders API: %w", err)
		}
	}
	return s, nil
}

// Orders returns the orders service, nil if it does not run here.
func (s *Shop) Orders() *Orders { return s.orders }

// URL returns the orders API's base URL ("" without the orders service).
func (s *Shop) URL() string {
	if s.ln == nil {
		return ""
	}
	return "http://" + s.ln.Addr().String()
}

// Run runs the services (and the load generator) until ctx ends.
func (s *Shop) Run(ctx context.Context) error {
	var runs []func(context.Context) error
	for _, name := range s.cfg.Services {
		switch name {
		case "orders":
			runs = append(runs, s.orders.Run, s.serve)
		case "inventory":
			runs = append(runs, func(ctx context.Context) error { return RunInventory(ctx, s.cfg.Env) })
		case "payments":
			runs = append(runs, func(ctx context.Context) error { return RunPayments(ctx, s.cfg.Env) })
		case "shipping":
			runs = append(runs, func(ctx context.Context) error { return RunShipping(ctx, s.cfg.Env) })
		case "notifications":
			runs = append(runs, func(ctx context.Context) error { return RunNotifications(ctx, s.cfg.Env, &s.Notified) })
		}
	}
	if s.cfg.Rate > 0 {
		runs = append(runs, s.generate)
	}
	return runAll(ctx, runs...)
}

func (s *Shop) serve(ctx context.Context) error {
	srv := &http.Server{Handler: s.orders.Handler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(s.ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("shop: orders API: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	<-done
	return nil
}

// generate places orders at the configured rate until ctx ends.
func (s *Shop) generate(ctx context.Context) error {
	t := time.NewTicker(time.Duration(float64(time.Second) / s.cfg.Rate))
	defer t.Stop()
	log := s.cfg.Env.Logger
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		_, err := s.orders.Place(ctx, PlaceRequest{
			Customer: "c-" + strconv.Itoa(rand.IntN(50)),
			SKU:      Products[rand.IntN(len(Products))],
			Quantity: 1 + rand.IntN(3),
			Total:    500 + rand.IntN(20000),
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if log != nil {
				log.Warn("shop: place order", "error", err)
			}
			continue
		}
		s.Generated.Add(1)
	}
}
