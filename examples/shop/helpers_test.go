package shop_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/eventstore"
	"github.com/heraldhq/herald/eventstore/postgres"
	"github.com/heraldhq/herald/examples/shop"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/saga"
	"github.com/heraldhq/herald/schema/serde"
	"github.com/heraldhq/herald/server"
)

// platform is a running Herald (broker + registry) and a PostgreSQL
// schema of the test's own.
type platform struct {
	srv    *server.Server
	pgURL  string
	schema string
	db     *pgxpool.Pool
	reg    *serde.Client
}

func startPlatform(t *testing.T) *platform {
	t.Helper()
	testenv.Need(t, "PostgreSQL", testenv.HostPort(testenv.PostgresURL))
	srv, err := server.New(server.Config{DataDir: t.TempDir(), NATSAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", RegistryAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	var b [4]byte
	_, _ = rand.Read(b[:])
	p := &platform{srv: srv, pgURL: testenv.PostgresURL, schema: "shop_test_" + hex.EncodeToString(b[:])}
	if p.db, err = shop.OpenDB(t.Context(), p.pgURL, p.schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := shop.DropSchema(ctx, p.pgURL, p.schema); err != nil {
			t.Errorf("drop schema %s: %v", p.schema, err)
		}
	})
	if p.reg, err = serde.NewClient(srv.RegistryURL()); err != nil {
		t.Fatal(err)
	}
	return p
}

// client connects a service like a process of its own would: its own
// NATS connection.
func (p *platform) client(t *testing.T, source string) *herald.Client {
	t.Helper()
	c, err := herald.Connect(t.Context(), herald.Config{URL: p.srv.NATSURL(), Source: source, Topics: shop.Topics})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// testTuning fails often and times out fast, so that 1,000 orders show
// every path in a short run.
var testTuning = shop.Tuning{
	PaymentFailRate: 0.2, ShippingTimeoutRate: 0.05, ShippingTimeout: 4 * time.Second, StepTimeout: 2 * time.Minute,
	SMSFailEvery: 7, AckWait: 3 * time.Second, SagaTick: 200 * time.Millisecond, ResendAfter: 3 * time.Second, Stock: 100_000,
}

// placeOrders posts n orders to the orders API at url with a few
// concurrent clients and returns their ids. after is called once with
// each count of orders placed so far.
func placeOrders(t *testing.T, url string, n int, after func(placed int64)) []string {
	t.Helper()
	defer func(start time.Time) {
		t.Logf("%d orders placed in %v", n, time.Since(start).Round(100*time.Millisecond))
	}(time.Now())
	var (
		mu     sync.Mutex
		ids    []string
		placed atomic.Int64
		wg     sync.WaitGroup
		next   atomic.Int64
		errs   = make(chan error, 8)
	)
	hc := &http.Client{Timeout: 30 * time.Second}
	for range 8 {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				body, _ := json.Marshal(shop.PlaceRequest{Customer: fmt.Sprintf("c-%d", i%50), SKU: shop.Products[i%int64(len(shop.Products))], Quantity: 1 + int(i%3), Total: 500 + int(i*37%20000)})
				var got shop.Placed
				var err error
				// The API may be briefly unavailable under load: retry.
				for attempt := 0; attempt < 5; attempt++ {
					var resp *http.Response
					resp, err = hc.Post(url+"/orders", "application/json", bytes.NewReader(body))
					if err != nil {
						continue
					}
					err = json.NewDecoder(resp.Body).Decode(&got)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusCreated {
						err = fmt.Errorf("POST /orders: %s", resp.Status)
					}
					if err == nil {
						break
					}
				}
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				ids = append(ids, got.ID)
				mu.Unlock()
				if after != nil {
					after(placed.Add(1))
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return ids
}

// verify waits until every order's saga has ended, then checks the books:
// each order completed (shipped, charged once, stock reserved) or
// compensated (cancelled, nothing charged net, nothing reserved), stock
// and payments balance, and the read model matches the event store.
func verify(t *testing.T, p *platform, ids []string, tuning shop.Tuning) {
	t.Helper()
	ctx := t.Context()
	nc, err := nats.Connect(p.srv.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	sagas, err := saga.OpenKVStore(ctx, js, saga.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	deadline := start.Add(5 * time.Minute)
	for {
		active, err := sagas.List(ctx, saga.Running)
		if err != nil {
			t.Fatal(err)
		}
		comp, err := sagas.List(ctx, saga.Compensating)
		if err != nil {
			t.Fatal(err)
		}
		all, err := sagas.List(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(active)+len(comp) == 0 && len(all) == len(ids) {
			break
		}
		if time.Since(start) > 10*time.Second && time.Since(start)%(10*time.Second) < 500*time.Millisecond {
			t.Logf("%d sagas of %d orders, %d running, %d compensating", len(all), len(ids), len(active), len(comp))
		}
		if time.Now().After(deadline) {
			sample := ""
			for _, in := range append(active, comp...)[:min(3, len(active)+len(comp))] {
				b, _ := json.Marshal(in)
				sample += "\n" + string(b)
			}
			t.Fatalf("after 5m: %d sagas of %d orders, %d running, %d compensating%s", len(all), len(ids), len(active), len(comp), sample)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("every saga ended %v after the last order was placed", time.Since(start).Round(time.Second))

	store, err := postgres.New(ctx, p.db)
	if err != nil {
		t.Fatal(err)
	}
	byOrder := map[string]*saga.Instance{}
	all, err := sagas.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range all {
		var o shop.OrderPlaced
		if err := json.Unmarshal(in.Data, &o); err != nil {
			t.Fatal(err)
		}
		byOrder[o.OrderID] = in
	}
	// The read model catches up with the event store within its poll.
	testenv.Eventually(t, 60*time.Second, "the read model to hold every order in a final status", func() bool {
		var n int
		err := p.db.QueryRow(ctx, "SELECT count(*) FROM order_summary WHERE status IN ('shipped', 'cancelled')").Scan(&n)
		return err == nil && n == len(ids)
	})
	var completed, compensated, declined, timedOut int
	wantStock := map[string]int{}
	for _, id := range ids {
		in := byOrder[id]
		if in == nil {
			t.Fatalf("order %s has no saga", id)
		}
		recs, err := eventstore.Collect(store.Load(ctx, "order-"+id, 0))
		if err != nil {
			t.Fatal(err)
		}
		status, version := "", uint64(0)
		for _, r := range recs {
			version = r.Version
			switch r.Event.Type {
			case shop.TypeOrderPlaced:
				status = shop.StatusPlaced
			case shop.TypeOrderShipped:
				status = shop.StatusShipped
			case shop.TypeOrderCancelled:
				status = shop.StatusCancelled
			}
		}
		var o shop.OrderPlaced
		_ = json.Unmarshal(in.Data, &o)
		var rmStatus string
		var rmVersion uint64
		var total int
		if err := p.db.QueryRow(ctx, "SELECT status, version, total_cents FROM order_summary WHERE id = $1", id).Scan(&rmStatus, &rmVersion, &total); err != nil {
			t.Fatalf("order %s in the read model: %v", id, err)
		}
		if rmStatus != status || rmVersion != version || total != o.Total {
			t.Errorf("order %s: read model says %s at version %d (total %d), event store %s at %d (total %d)", id, rmStatus, rmVersion, total, status, version, o.Total)
		}
		var charges, refunds, net int
		if err := p.db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE kind = 'charge'), count(*) FILTER (WHERE kind = 'refund'),
			coalesce(sum(CASE kind WHEN 'charge' THEN amount_cents WHEN 'refund' THEN -amount_cents ELSE 0 END), 0)
			FROM payments_ledger WHERE order_id = $1`, id).Scan(&charges, &refunds, &net); err != nil {
			t.Fatal(err)
		}
		var reserved int
		if err := p.db.QueryRow(ctx, "SELECT coalesce(sum(quantity), 0) FROM inventory_reservations WHERE order_id = $1 AND state = 'reserved'", id).Scan(&reserved); err != nil {
			t.Fatal(err)
		}
		if charges > 1 || refunds > charges {
			t.Errorf("order %s: charged %d times, refunded %d times", id, charges, refunds)
		}
		switch in.State {
		case saga.Completed:
			completed++
			if status != shop.StatusShipped || net != o.Total || reserved != o.Quantity {
				t.Errorf("completed order %s: status %s, net payment %d of %d, %d of %d reserved", id, status, net, o.Total, reserved, o.Quantity)
			}
			wantStock[o.SKU] += o.Quantity
		case saga.Compensated:
			compensated++
			if status != shop.StatusCancelled || net != 0 || reserved != 0 {
				t.Errorf("compensated order %s: status %s, net payment %d, %d reserved (saga: %s)", id, status, net, reserved, in.Error)
			}
			for _, h := range in.History {
				if h.Reply == shop.TypePaymentFailed {
					declined++
				}
				if h.Step == "ship" && h.Outcome == "timeout" {
					timedOut++
				}
			}
		default:
			t.Errorf("order %s: saga ended %s: %s", id, in.State, in.Error)
		}
	}
	for _, sku := range shop.Products {
		var available int
		if err := p.db.QueryRow(ctx, "SELECT available FROM inventory_stock WHERE sku = $1", sku).Scan(&available); err != nil {
			t.Fatal(err)
		}
		if tuning.Stock-available != wantStock[sku] {
			t.Errorf("stock of %s: %d taken, completed orders hold %d", sku, tuning.Stock-available, wantStock[sku])
		}
	}
	var orphans int
	if err := p.db.QueryRow(ctx, "SELECT count(*) FROM payments_ledger WHERE kind = 'charge' AND order_id <> ALL($1)", ids).Scan(&orphans); err != nil || orphans != 0 {
		t.Errorf("%d charges of unknown orders (%v)", orphans, err)
	}
	t.Logf("%d orders: %d completed, %d compensated (%d declined payments, %d shipping timeouts)", len(ids), completed, compensated, declined, timedOut)
	if completed == 0 || declined == 0 || timedOut == 0 {
		t.Errorf("want every path taken: %d completed, %d declined, %d shipping timeouts", completed, declined, timedOut)
	}
}
