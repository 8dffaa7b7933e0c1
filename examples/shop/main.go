package shop

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/schema/serde"
)

// DefaultPostgres is the database the shop's programs use unless told
// otherwise ($HERALD_POSTGRES, --postgres).
const DefaultPostgres = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// Main runs service (one of Services, or "all") as a program with args
// as its command line, until ctx ends. It is the body of the programs
// under examples/shop/cmd. The orders service prints its API's URL to
// stdout once it listens.
func Main(ctx context.Context, service string, args []string, stdout, stderr io.Writer) error {
	if service != "all" && !slices.Contains(Services, service) {
		return fmt.Errorf("unknown service %q: want all or one of %v", service, Services)
	}
	fs := flag.NewFlagSet(service, flag.ContinueOnError)
	fs.SetOutput(stderr)
	env := func(name, def string) string {
		if v := os.Getenv(name); v != "" {
			return v
		}
		return def
	}
	var (
		url      = fs.String("url", env("HERALD_URL", "nats://127.0.0.1:4222"), "NATS URL of the Herald broker ($HERALD_URL)")
		registry = fs.String("registry", env("HERALD_REGISTRY", "http://127.0.0.1:8081"), "schema registry URL ($HERALD_REGISTRY)")
		pg       = fs.String("postgres", env("HERALD_POSTGRES", DefaultPostgres), "PostgreSQL URL ($HERALD_POSTGRES)")
		schema   = fs.String("schema", "shop", "PostgreSQL schema of the shop's tables (shared by its services)")
		addr     = fs.String("addr", "127.0.0.1:8090", "orders: where the orders API listens")
		creds    = fs.String("creds", "", "credentials file for a broker that authenticates clients (default $HERALD_CREDS)")
		rate     = fs.Float64("rate", 0, "all: orders per second the load generator places")
		debug    = fs.Bool("debug", false, "log at debug level")
		t        = DefaultTuning
	)
	fs.Float64Var(&t.PaymentFailRate, "payment-fail-rate", t.PaymentFailRate, "payments: fraction of charges refused (negative: none)")
	fs.Float64Var(&t.ShippingTimeoutRate, "shipping-timeout-rate", t.ShippingTimeoutRate, "shipping: fraction of shipments never answered (negative: none)")
	fs.DurationVar(&t.ShippingTimeout, "shipping-timeout", t.ShippingTimeout, "orders: how long the saga waits for a shipment")
	fs.DurationVar(&t.StepTimeout, "step-timeout", t.StepTimeout, "orders: how long the saga waits for the other steps")
	fs.IntVar(&t.SMSFailEvery, "sms-fail-every", t.SMSFailEvery, "notifications: the SMS notifier fails one order in this many (negative: never)")
	fs.DurationVar(&t.AckWait, "ack-wait", t.AckWait, "how long a delivery stays with a member that went silent")
	fs.IntVar(&t.Stock, "stock", t.Stock, "inventory: initial stock of each product")
	fs.StringVar(&t.Seed, "seed", t.Seed, "varies which orders fail on purpose")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})).With("service", service)
	c, err := herald.Connect(ctx, herald.Config{URL: *url, Source: service, Topics: Topics, Logger: log, Credentials: *creds})
	if err != nil {
		return fmt.Errorf("connect to %s: %w", *url, err)
	}
	defer c.Close()
	reg, err := serde.NewClient(*registry)
	if err != nil {
		return fmt.Errorf("--registry: %w", err)
	}
	db, err := OpenDB(ctx, *pg, *schema)
	if err != nil {
		return err
	}
	defer db.Close()
	services := []string{service}
	if service == "all" {
		services = nil
	}
	s, err := New(ctx, Config{Env: Env{Client: c, Registry: reg, DB: db, Logger: log, Tuning: t}, Services: services, OrdersAddr: *addr, Rate: *rate})
	if err != nil {
		return err
	}
	if u := s.URL(); u != "" {
		fmt.Fprintf(stdout, "orders API on %s\n", u)
	}
	err = s.Run(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
