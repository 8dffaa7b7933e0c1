package projection_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/eventstore"
	"github.com/heraldhq/herald/eventstore/memory"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/projection"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// summary is the order-summary read model: events per type.
func summary(t *testing.T, p *pgxpool.Pool, s eventstore.Store) *projection.Projector {
	t.Helper()
	name := "summary_" + strings.ToLower(rand.Text())[:10]
	pr, err := projection.New(t.Context(), p, s, projection.Config{
		Name:      name,
		BatchSize: 1000,
		Poll:      10 * time.Millisecond,
		Create: func(table string) string {
			return "CREATE TABLE " + table + " (type text PRIMARY KEY, n bigint NOT NULL)"
		},
		Handle: func(ctx context.Context, tx pgx.Tx, table string, rec *eventstore.Record) error {
			_, err := tx.Exec(ctx, "INSERT INTO "+table+" (type, n) VALUES ($1, 1) ON CONFLICT (type) DO UPDATE SET n = "+table+".n + 1", rec.Event.Type)
			return err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pr.Drop(context.Background()); err != nil {
			t.Errorf("drop projection %s: %v", name, err)
		}
	})
	return pr
}

func fill(t *testing.T, s eventstore.Store, n int) {
	t.Helper()
	for i := 0; i < n; i += 500 {
		evs := make([]*event.Event, min(500, n-i))
		for j := range evs {
			typ := "shop.order.placed.v1"
			if (i+j)%3 == 0 {
				typ = "shop.order.shipped.v1"
			}
			evs[j] = event.New("orders", typ, []byte(`{}`))
		}
		if _, err := s.Append(t.Context(), fmt.Sprintf("order-%d", i/500%100), eventstore.Any, evs...); err != nil {
			t.Fatal(err)
		}
	}
}

func counts(ctx context.Context, p *pgxpool.Pool, view string) (map[string]int64, error) {
	rows, err := p.Query(ctx, "SELECT type, n FROM "+pgx.Identifier{view}.Sanitize())
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for rows.Next() {
		var typ string
		var n int64
		if err := rows.Scan(&typ, &n); err != nil {
			return nil, err
		}
		out[typ] = n
	}
	return out, rows.Err()
}

func want(t *testing.T, s eventstore.Store) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for r, err := range s.ReadAll(t.Context(), 0) {
		if err != nil {
			t.Fatal(err)
		}
		out[r.Event.Type]++
	}
	return out
}

func TestCatchUpAndCheckpoint(t *testing.T) {
	p := testenv.PGPool(t, 8)
	s := memory.New()
	fill(t, s, 2500)
	pr := summary(t, p, s)
	cp, err := pr.CatchUp(t.Context())
	if err != nil || cp != 2500 {
		t.Fatalf("catch up: %d, %v; want checkpoint 2500", cp, err)
	}
	fill(t, s, 700)
	if cp, err = pr.CatchUp(t.Context()); err != nil || cp != 3200 {
		t.Fatalf("second catch up: %d, %v", cp, err)
	}
	got, err := counts(t.Context(), p, pr.Name())
	if err != nil {
		t.Fatal(err)
	}
	if w := want(t, s); fmt.Sprint(got) != fmt.Sprint(w) {
		t.Errorf("read model %v, want %v", got, w)
	}
}

// TestRebuildWhileServing rebuilds over rebuildEvents events while live
// events arrive and queries run: the rebuilt model matches the events,
// and no query fails.
func TestRebuildWhileServing(t *testing.T) {
	p := testenv.PGPool(t, 8)
	s := memory.New()
	fill(t, s, rebuildEvents)
	pr := summary(t, p, s)
	if _, err := pr.CatchUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var (
		wg               sync.WaitGroup
		queries, qerrors atomic.Int64
		firstErr         atomic.Value
	)
	wg.Add(3)
	go func() { // queries
		defer wg.Done()
		for ctx.Err() == nil {
			if _, err := counts(ctx, p, pr.Name()); err != nil && ctx.Err() == nil {
				qerrors.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
			queries.Add(1)
		}
	}()
	go func() { // live writes
		defer wg.Done()
		for ctx.Err() == nil {
			if _, err := s.Append(ctx, "order-live", eventstore.Any, event.New("orders", "shop.order.placed.v1", []byte(`{}`))); err != nil && ctx.Err() == nil {
				t.Error(err)
				return
			}
			time.Sleep(2 * time.Millisecond) // a steady trickle of live events
		}
	}()
	runErr := make(chan error, 1)
	go func() { defer wg.Done(); runErr <- pr.Run(ctx) }()
	var calls atomic.Int64
	var lastApplied atomic.Int64
	if err := pr.Rebuild(t.Context(), func(applied int, _, _ uint64) { calls.Add(1); lastApplied.Store(int64(applied)) }); err != nil {
		t.Fatal(err)
	}
	cancel()
	wg.Wait()
	if err := <-runErr; err != nil {
		t.Fatalf("live projector: %v", err)
	}
	if _, err := pr.CatchUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	got, err := counts(t.Context(), p, pr.Name())
	if err != nil {
		t.Fatal(err)
	}
	if w := want(t, s); fmt.Sprint(got) != fmt.Sprint(w) {
		t.Errorf("rebuilt read model %v, want %v", got, w)
	}
	if n := qerrors.Load(); n > 0 {
		t.Errorf("%d of %d queries failed during the rebuild, first: %v", n, queries.Load(), firstErr.Load())
	}
	st, err := pr.Status(t.Context())
	if err != nil || !strings.HasSuffix(st.Table, "_g2") {
		t.Errorf("status after rebuild = %+v, %v; want the second table serving", st, err)
	}
	if calls.Load() == 0 || lastApplied.Load() < rebuildEvents {
		t.Errorf("progress called %d times, last at %d applied; want calls up to %d", calls.Load(), lastApplied.Load(), rebuildEvents)
	}
	t.Logf("rebuilt %d events with %d queries served, %d progress reports", lastApplied.Load(), queries.Load(), calls.Load())
}
