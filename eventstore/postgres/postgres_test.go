package postgres_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/eventstore"
	"github.com/heraldhq/herald/eventstore/postgres"
	"github.com/heraldhq/herald/eventstore/storetest"
	"github.com/heraldhq/herald/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newStore returns a store on fresh tables, dropped when the test ends.
func newStore(t testing.TB, p *pgxpool.Pool) *postgres.Store {
	t.Helper()
	prefix := "es_test_" + strings.ToLower(rand.Text())[:12]
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, q := range []string{"DROP TABLE IF EXISTS %s_events", "DROP TABLE IF EXISTS %s_streams", "DROP SEQUENCE IF EXISTS %s_position"} {
			if _, err := p.Exec(ctx, fmt.Sprintf(q, prefix)); err != nil {
				t.Errorf("%s: %v", fmt.Sprintf(q, prefix), err)
			}
		}
	})
	s, err := postgres.New(t.Context(), p, postgres.WithPrefix(prefix), postgres.WithMigrate())
	if err != nil {
		t.Fatalf("new store with prefix %q: %v", prefix, err)
	}
	return s
}

func TestConformance(t *testing.T) {
	p := testenv.PGPool(t, 16)
	storetest.Run(t, func(t *testing.T) eventstore.Store { return newStore(t, p) })
}

func TestNewChecks(t *testing.T) {
	p := testenv.PGPool(t, 2)
	if _, err := postgres.New(t.Context(), p, postgres.WithPrefix("bad-prefix")); err == nil {
		t.Error("a prefix with a dash was accepted")
	}
	if _, err := postgres.New(t.Context(), p, postgres.WithPrefix("es_missing_"+strings.ToLower(rand.Text())[:8])); err == nil || !strings.Contains(err.Error(), "Migrate") {
		t.Errorf("missing tables: %v, want an error that says to migrate", err)
	}
	s := newStore(t, p)
	if _, err := postgres.New(t.Context(), p, postgres.WithPrefix(s.Prefix())); err != nil {
		t.Errorf("existing tables: %v", err)
	}
}

// TestHorizonWaitsForOpenAppend holds an append open at an early position
// while a later one commits: ReadAll must not get past the open one.
func TestHorizonWaitsForOpenAppend(t *testing.T) {
	p := testenv.PGPool(t, 4)
	s := newStore(t, p)
	ctx := t.Context()
	slow, err := p.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = slow.Rollback(context.Background()) }()
	slowEv := storetest.Events("slow.v1", 1)
	sres, err := s.AppendTx(ctx, slow, "slow-1", eventstore.Any, slowEv...)
	if err != nil {
		t.Fatal(err)
	}
	fres, err := s.Append(ctx, "fast-1", eventstore.Any, storetest.Events("fast.v1", 1)...)
	if err != nil {
		t.Fatal(err)
	}
	if fres.Position <= sres.Position {
		t.Fatalf("fast position %d not after slow %d", fres.Position, sres.Position)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = s.Horizon(short)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("horizon with an append open at an earlier position: %v, want it to wait", err)
	}
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	all, err := eventstore.Collect(s.ReadAll(ctx, 0))
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].Event.ID != slowEv[0].ID || all[1].Position != fres.Position {
		t.Fatalf("read %d events, want the slow one then the fast one", len(all))
	}
}

// TestCheckpointedReaderMissesNothing interleaves slow and fast
// transactions, some rolled back, with a reader that resumes from its
// checkpoint over and over: it must see every committed event once, in
// increasing positions.
func TestCheckpointedReaderMissesNothing(t *testing.T) {
	p := testenv.PGPool(t, 16)
	s := newStore(t, p)
	ctx := t.Context()
	const writers, appends = 6, 25
	var (
		mu        sync.Mutex
		committed = map[string]bool{}
		wg        sync.WaitGroup
	)
	errc := make(chan error, writers+1)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(w), 7))
			for i := range appends {
				evs := storetest.Events("gap.v1", 1+rng.IntN(3))
				stream := fmt.Sprintf("gap-%d-%d", w, i%3)
				if w%2 == 0 { // fast writers: their own transaction
					if _, err := s.Append(ctx, stream, eventstore.Any, evs...); err != nil {
						errc <- err
						return
					}
				} else { // slow writers: hold the transaction open a while
					tx, err := p.Begin(ctx)
					if err != nil {
						errc <- err
						return
					}
					if _, err := s.AppendTx(ctx, tx, stream, eventstore.Any, evs...); err != nil {
						_ = tx.Rollback(ctx)
						errc <- err
						return
					}
					time.Sleep(time.Duration(rng.IntN(15)) * time.Millisecond) // a slow transaction
					if rng.IntN(5) == 0 {
						if err := tx.Rollback(ctx); err != nil {
							errc <- err
							return
						}
						continue
					}
					if err := tx.Commit(ctx); err != nil {
						errc <- err
						return
					}
				}
				mu.Lock()
				for _, e := range evs {
					committed[e.ID] = true
				}
				mu.Unlock()
			}
		}()
	}
	writersDone := make(chan struct{})
	go func() { wg.Wait(); close(writersDone) }()

	seen := map[string]int{}
	var checkpoint uint64
	read := func() error {
		for r, err := range s.ReadAll(ctx, checkpoint) {
			if err != nil {
				return err
			}
			if r.Position <= checkpoint {
				return fmt.Errorf("position %d after checkpoint %d", r.Position, checkpoint)
			}
			checkpoint = r.Position
			seen[r.Event.ID]++
		}
		return nil
	}
	passes := 0
	for done := false; !done; passes++ {
		select {
		case <-writersDone:
			done = true
		default:
		}
		if err := read(); err != nil {
			t.Fatal(err)
		}
	}
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	// The last pass started after every writer ended.
	missed, twice := 0, 0
	for id := range committed {
		switch seen[id] {
		case 0:
			missed++
		case 1:
		default:
			twice++
		}
	}
	if missed > 0 {
		all, _ := eventstore.Collect(s.ReadAll(ctx, 0))
		for _, r := range all {
			if seen[r.Event.ID] == 0 {
				t.Logf("missed position %d stream %s", r.Position, r.Stream)
			}
		}
	}
	if missed > 0 || twice > 0 || len(seen) != len(committed) {
		t.Fatalf("%d committed events: reader missed %d, saw %d twice, saw %d in all (%d passes)", len(committed), missed, twice, len(seen), passes)
	}
	t.Logf("%d committed events read in %d checkpointed passes", len(committed), passes)
}

// TestAppendTxRollsBack checks that events appended in a rolled-back
// transaction leave no trace.
func TestAppendTxRollsBack(t *testing.T) {
	p := testenv.PGPool(t, 4)
	s := newStore(t, p)
	ctx := t.Context()
	err := pgx.BeginFunc(ctx, p, func(tx pgx.Tx) error {
		if _, err := s.AppendTx(ctx, tx, "rb-1", eventstore.NoStream, storetest.Events("t.v1", 3)...); err != nil {
			return err
		}
		return errors.New("business rule failed")
	})
	if err == nil {
		t.Fatal("transaction did not fail")
	}
	info, err := s.Info(ctx, "rb-1")
	if err != nil || info.Version != 0 {
		t.Errorf("info after rollback = %+v, %v; want version 0", info, err)
	}
	if res, err := s.Append(ctx, "rb-1", eventstore.NoStream, storetest.Events("t.v1", 1)...); err != nil || res.Version != 1 {
		t.Errorf("append after rollback = %+v, %v; want version 1", res, err)
	}
}
