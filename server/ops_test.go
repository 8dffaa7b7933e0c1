package server_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/admin"
	"github.com/heraldhq/herald/server/audit"
	"github.com/heraldhq/herald/server/servertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.NATSLeaks()...)
}

// eventually polls cond every 20ms until it holds or timeout passes; what
// names the awaited condition in the failure.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last state: %s", timeout, what, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// gauge scrapes /metrics and returns the value of the series name{labels}
// (labels as Prometheus prints them), and whether it is present.
func gauge(t *testing.T, adminURL, series string) (float64, bool) {
	t.Helper()
	resp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("series %s: value %q", series, v)
			}
			return f, true
		}
	}
	return 0, false
}

// TestDeadLetterRedriveEndToEnd is the operator's story: a handler fails on
// purpose, the events land in the dead-letter queue with their context,
// /metrics shows the depth, the handler is fixed, a redrive pushes them
// through, each is handled once, and the depth goes back to 0.
func TestDeadLetterRedriveEndToEnd(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, server.Config{})
	ctx := t.Context()
	c, err := herald.Connect(ctx, herald.Config{URL: srv.NATSURL(), Source: "e2e"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	topic := testenv.Unique("orders")
	const n = 25
	var (
		broken  atomic.Bool
		mu      sync.Mutex
		handled = map[string]int{}
		fails   atomic.Int64
	)
	broken.Store(true)
	r, err := c.Router("billing", []string{topic},
		consumer.WithStart(broker.FromFirst),
		consumer.WithRetry(consumer.RetryPolicy{MaxAttempts: 3, Backoff: consumer.Backoff{Initial: 10 * time.Millisecond, Max: 40 * time.Millisecond, Multiplier: 2}}))
	if err != nil {
		t.Fatal(err)
	}
	r.Handle("shop.order.placed.v1", func(ctx context.Context, m *consumer.Message) error {
		if broken.Load() {
			fails.Add(1)
			return errors.New("payment service down")
		}
		mu.Lock()
		handled[m.Event.ID]++
		mu.Unlock()
		return nil
	})
	rctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := r.Run(rctx); err != nil {
			t.Errorf("router: %v", err)
		}
	})
	defer func() { stop(); wg.Wait() }()

	ids := map[string]bool{}
	events := make([]*event.Event, n)
	for i := range events {
		e := event.New("e2e", "shop.order.placed.v1", []byte(fmt.Sprintf(`{"order":%d}`, i)))
		e.Subject = fmt.Sprintf("o-%d", i)
		e.DataContentType = "application/json"
		events[i] = e
		ids[e.ID] = true
	}
	if err := c.PublishTo(ctx, topic, events...); err != nil {
		t.Fatal(err)
	}

	dlqSeries := fmt.Sprintf(`herald_dlq_depth_messages{topic=%q}`, topic+".dlq")
	eventually(t, 30*time.Second, "every event in the DLQ, seen by /metrics", func() (bool, string) {
		v, ok := gauge(t, srv.AdminURL(), dlqSeries)
		return ok && v == n, fmt.Sprintf("%s = %v (present %v), handler failures %d", dlqSeries, v, ok, fails.Load())
	})

	cl, err := admin.NewClient(srv.AdminURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	page, err := cl.DLQEntries(ctx, topic, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Entries) != n {
		t.Fatalf("dlq lists %d entries, want %d", len(page.Entries), n)
	}
	for _, e := range page.Entries {
		if !ids[e.EventID] || e.Topic != topic || e.Group != "billing" || e.Handler != "shop.order.placed.v1" ||
			e.Attempts != 3 || e.Redrives != 0 || !strings.Contains(e.Error, "payment service down") ||
			e.FirstFailure.IsZero() || e.LastFailure.Before(e.FirstFailure) || e.Type != "shop.order.placed.v1" {
			t.Fatalf("dead letter without its context: %+v", e)
		}
	}
	full, err := cl.DLQEntry(ctx, page.Entries[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(full.Data), `{"order":`) || full.Headers["ce-id"] != full.EventID {
		t.Fatalf("dlq show: data %s headers %v", full.Data, full.Headers)
	}

	broken.Store(false)
	res, err := cl.Redrive(ctx, admin.RedriveRequest{Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	if res.Matched != n || res.Redriven != n || res.Failed != 0 {
		t.Fatalf("redrive: %+v", res)
	}
	// Running it again finds nothing: the queue is empty.
	again, err := cl.Redrive(ctx, admin.RedriveRequest{Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	if again.Matched != 0 || again.Redriven != 0 {
		t.Fatalf("second redrive: %+v", again)
	}
	eventually(t, 30*time.Second, "every redriven event handled", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) == n, fmt.Sprintf("%d of %d handled", len(handled), n)
	})
	eventually(t, 30*time.Second, "the DLQ depth back to 0 on /metrics and the group idle", func() (bool, string) {
		v, ok := gauge(t, srv.AdminURL(), dlqSeries)
		lags, err := cl.Lag(ctx, topic, "billing")
		if err != nil {
			return false, err.Error()
		}
		idle := len(lags) == 1 && lags[0].Pending == 0 && lags[0].InFlight == 0
		return ok && v == 0 && idle, fmt.Sprintf("%s = %v, lag %+v", dlqSeries, v, lags)
	})
	mu.Lock()
	defer mu.Unlock()
	for id := range ids {
		if handled[id] != 1 {
			t.Errorf("event %s handled %d times after the redrive, want 1", id, handled[id])
		}
	}

	// The audit log saw each event three times: published, dead-lettered,
	// redriven; the trace folds them into one node each.
	if err := srv.AuditIndexer().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	recs, err := srv.AuditIndexer().Query(ctx, audit.Query{Type: "shop.order.placed.v1", Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	redriven := 0
	for _, r := range recs {
		if r.Redrives == 1 {
			redriven++
		}
	}
	if len(recs) != 2*n || redriven != n {
		t.Fatalf("audit log has %d records of topic %s (%d redriven), want %d (%d)", len(recs), topic, redriven, 2*n, n)
	}
}

// TestAuditInPostgres runs the server with the PostgreSQL audit store.
func TestAuditInPostgres(t *testing.T) {
	t.Parallel()
	testenv.Need(t, "PostgreSQL", testenv.HostPort(testenv.PostgresURL))
	schema := strings.ReplaceAll(testenv.Unique("audit_srv"), "-", "_")
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), testenv.PostgresURL)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	srv := servertest.Start(t, server.Config{Audit: server.AuditConfig{Store: server.AuditPostgres, PostgresURL: testenv.PostgresURL, PostgresSchema: schema}})
	ctx := t.Context()
	c, err := herald.Connect(ctx, herald.Config{URL: srv.NATSURL(), Source: "pg"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	topic := testenv.Unique("pg")
	corr := testenv.Unique("corr")
	var prev *event.Event
	for i := range 5 {
		e := event.New("pg", "pg.step.v1", []byte(fmt.Sprintf(`{"i":%d}`, i)))
		e.CorrelationID = corr
		if prev != nil {
			e.CausationID = prev.ID
		}
		if err := c.PublishTo(ctx, topic, e); err != nil {
			t.Fatal(err)
		}
		prev = e
	}
	if err := srv.AuditIndexer().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	cl, err := admin.NewClient(srv.AdminURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cl.Trace(ctx, corr, true)
	if err != nil {
		t.Fatal(err)
	}
	depth := 0
	for n := tr.Roots; len(n) == 1; n = n[0].Children {
		if string(n[0].Payload) != fmt.Sprintf(`{"i":%d}`, depth) {
			t.Fatalf("payload %s at depth %d", n[0].Payload, depth)
		}
		depth++
	}
	if tr.Events != 5 || depth != 5 {
		t.Fatalf("trace of %d events, depth %d", tr.Events, depth)
	}
	if _, err := server.New(server.Config{DataDir: t.TempDir(), Audit: server.AuditConfig{Store: server.AuditPostgres}}); err == nil {
		t.Fatal("a postgres audit store without a URL was accepted")
	}
	if _, err := server.New(server.Config{DataDir: t.TempDir(), Audit: server.AuditConfig{Store: "mysql"}}); err == nil {
		t.Fatal("an unknown audit store was accepted")
	}
}
