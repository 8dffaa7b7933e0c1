package aggregate_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/heraldhq/herald/aggregate"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/eventstore"
	"github.com/heraldhq/herald/eventstore/memory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Counter counts "inc" events; Applied counts Apply calls, to see what a
// snapshot saved.
type Counter struct {
	N       int
	Applied int `json:"-"`
}

func applyCounter(c Counter, e *event.Event) (Counter, error) {
	if e.Type != "count.inc.v1" {
		return c, fmt.Errorf("unknown event type %q", e.Type)
	}
	var d struct{ By int }
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return c, err
	}
	c.N += d.By
	c.Applied++
	return c, nil
}

func newCounters(store eventstore.Store, every uint64) (*aggregate.Repository[Counter], error) {
	return aggregate.New(store, aggregate.Config[Counter]{Name: "counter", Source: "test", Apply: applyCounter, SnapshotEvery: every, MaxRetries: 50})
}

func counters(t *testing.T, store eventstore.Store, every uint64) *aggregate.Repository[Counter] {
	t.Helper()
	r, err := newCounters(store, every)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func inc(by int) func(*aggregate.Aggregate[Counter]) error {
	return func(a *aggregate.Aggregate[Counter]) error { return a.Record("count.inc.v1", map[string]int{"by": by}) }
}

func TestSnapshots(t *testing.T) {
	store := memory.New()
	r := counters(t, store, 10)
	for range 25 {
		if _, err := r.Update(t.Context(), "a", inc(1)); err != nil {
			t.Fatal(err)
		}
	}
	a, err := r.Load(t.Context(), "a")
	if err != nil {
		t.Fatal(err)
	}
	if a.State.N != 25 || a.Version != 25 {
		t.Fatalf("state %+v at version %d, want 25 at 25", a.State, a.Version)
	}
	if a.State.Applied != 5 {
		t.Errorf("applied %d events on load, want the 5 after the snapshot at 20", a.State.Applied)
	}
	snaps, err := eventstore.Collect(store.Load(t.Context(), "counter-a.snapshot", 0))
	if err != nil || len(snaps) != 2 {
		t.Errorf("%d snapshots (%v), want 2 (at 10 and 20)", len(snaps), err)
	}
	// Another snapshot version: the snapshot is ignored, the events replayed.
	r2, _ := aggregate.New(store, aggregate.Config[Counter]{Name: "counter", Source: "test", Apply: applyCounter, SnapshotEvery: 10, SnapshotVersion: 2})
	a, err = r2.Load(t.Context(), "a")
	if err != nil || a.State.N != 25 || a.State.Applied != 25 {
		t.Errorf("load with a new snapshot version: %+v, %v; want all 25 replayed", a.State, err)
	}
}

func TestBadSnapshot(t *testing.T) {
	store := memory.New()
	r := counters(t, store, 10)
	if _, err := r.Update(t.Context(), "b", inc(1)); err != nil {
		t.Fatal(err)
	}
	bad := event.New("test", aggregate.SnapshotType, []byte(`{"schema":0,"version":"x"}`))
	if _, err := store.Append(t.Context(), "counter-b.snapshot", eventstore.Any, bad); err != nil {
		t.Fatal(err)
	}
	_, err := r.Load(t.Context(), "b")
	if err == nil || !strings.Contains(err.Error(), "does not decode") {
		t.Errorf("load with a broken snapshot: %v, want a decode error", err)
	}
}

func TestUpdateRetriesConflicts(t *testing.T) {
	store := memory.New()
	// Each conflict an Update meets is another writer's save, so one of 8
	// writers of 10 increments meets at most 70: with that many retries no
	// schedule can make it give up.
	r, err := aggregate.New(store, aggregate.Config[Counter]{Name: "counter", Source: "test", Apply: applyCounter, MaxRetries: 70})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				if _, err := r.Update(context.Background(), "c", inc(1)); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	a, err := r.Load(t.Context(), "c")
	if err != nil || a.State.N != 80 || a.Version != 80 {
		t.Errorf("after 80 concurrent increments: %+v at %d, %v", a.State, a.Version, err)
	}
}

func TestSaveConflict(t *testing.T) {
	r := counters(t, memory.New(), 0)
	a1, _ := r.Load(t.Context(), "d")
	a2, _ := r.Load(t.Context(), "d")
	_ = a1.Record("count.inc.v1", map[string]int{"by": 1})
	_ = a2.Record("count.inc.v1", map[string]int{"by": 2})
	if err := r.Save(t.Context(), a1); err != nil {
		t.Fatal(err)
	}
	if err := r.Save(t.Context(), a2); !errors.Is(err, eventstore.ErrConflict) {
		t.Errorf("second save from the same version: %v, want ErrConflict", err)
	}
}

func TestUpcasters(t *testing.T) {
	store := memory.New()
	// v1 carried "amount", v2 "by" as a string, v3 (current) "by" as a number.
	v1 := event.New("test", "count.inc.v1-old", []byte(`{"amount":3}`))
	if _, err := store.Append(t.Context(), "counter-e", eventstore.Any, v1); err != nil {
		t.Fatal(err)
	}
	up := aggregate.Upcasters{
		"count.inc.v1-old": func(e *event.Event) (*event.Event, error) {
			var d struct{ Amount int }
			if err := json.Unmarshal(e.Data, &d); err != nil {
				return nil, err
			}
			e.Type, e.Data = "count.inc.v2-old", fmt.Appendf(nil, `{"by":"%d"}`, d.Amount)
			return e, nil
		},
		"count.inc.v2-old": func(e *event.Event) (*event.Event, error) {
			var d struct{ By string }
			if err := json.Unmarshal(e.Data, &d); err != nil {
				return nil, err
			}
			e.Type, e.Data = "count.inc.v1", fmt.Appendf(nil, `{"by":%s}`, d.By)
			return e, nil
		},
	}
	r, _ := aggregate.New(store, aggregate.Config[Counter]{Name: "counter", Source: "test", Apply: applyCounter, Upcasters: up})
	a, err := r.Load(t.Context(), "e")
	if err != nil || a.State.N != 3 {
		t.Fatalf("load through v1->v2->v3: %+v, %v", a, err)
	}
	cycle := aggregate.Upcasters{
		"a": func(e *event.Event) (*event.Event, error) { e.Type = "b"; return e, nil },
		"b": func(e *event.Event) (*event.Event, error) { e.Type = "a"; return e, nil },
	}
	if _, err := cycle.Upcast(event.New("t", "a", nil)); err == nil {
		t.Error("an upcaster cycle was not reported")
	}
}

func TestNewChecks(t *testing.T) {
	apply := func(c Counter, _ *event.Event) (Counter, error) { return c, nil }
	for name, cfg := range map[string]aggregate.Config[Counter]{
		"no name":     {Source: "s", Apply: apply},
		"no source":   {Name: "n", Apply: apply},
		"no apply":    {Name: "n", Source: "s"},
		"bad name":    {Name: "a b", Source: "s", Apply: apply},
		"neg retries": {Name: "n", Source: "s", Apply: apply, MaxRetries: -1},
	} {
		if _, err := aggregate.New(memory.New(), cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	r := counters(t, memory.New(), 0)
	if _, err := r.Load(t.Context(), "bad id"); !errors.Is(err, eventstore.ErrInvalid) {
		t.Errorf("load of a bad id: %v, want ErrInvalid", err)
	}
}

// TestUpdateWaitsOutConflicts makes Update conflict by appending behind
// its back: it tries again with the fresh state and saves; when the
// context ends while it waits to try again, it returns that and saves
// nothing.
func TestUpdateWaitsOutConflicts(t *testing.T) {
	store := memory.New()
	r := counters(t, store, 0)
	interfere := func(id string) {
		e := event.New("test", "count.inc.v1", []byte(`{"by":100}`))
		if _, err := store.Append(t.Context(), r.Stream(id), eventstore.Any, e); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("retried", func(t *testing.T) {
		calls := 0
		a, err := r.Update(t.Context(), "w", func(a *aggregate.Aggregate[Counter]) error {
			calls++
			if calls <= 3 {
				interfere("w")
			}
			return a.Record("count.inc.v1", map[string]int{"by": 1})
		})
		if err != nil {
			t.Fatal(err)
		}
		if calls != 4 || a.State.N != 301 || a.Version != 4 {
			t.Errorf("after 3 conflicts: %d calls, state %+v at version %d; want 4 calls, 301 at 4", calls, a.State, a.Version)
		}
	})
	t.Run("context ends while waiting", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		// The context ends as the save meets its conflict, so Update is
		// waiting to try again when it notices.
		rc, err := newCounters(cancelOnConflict{Store: store, cancel: cancel}, 0)
		if err != nil {
			t.Fatal(err)
		}
		calls := 0
		_, err = rc.Update(ctx, "x", func(a *aggregate.Aggregate[Counter]) error {
			calls++
			interfere("x")
			return a.Record("count.inc.v1", map[string]int{"by": 1})
		})
		if !errors.Is(err, context.Canceled) || !errors.Is(err, eventstore.ErrConflict) || calls != 1 {
			t.Fatalf("err = %v after %d calls; want the cancellation and the conflict, 1 call", err, calls)
		}
		a, err := r.Load(t.Context(), "x")
		if err != nil || a.Version != 1 || a.State.N != 100 {
			t.Errorf("stream after the cancelled update: %+v at %d, %v; want only the other writer's event", a.State, a.Version, err)
		}
	})
}

// cancelOnConflict is a store that calls cancel when an append conflicts.
type cancelOnConflict struct {
	eventstore.Store
	cancel context.CancelFunc
}

func (s cancelOnConflict) Append(ctx context.Context, stream string, expected eventstore.Expected, events ...*event.Event) (eventstore.AppendResult, error) {
	res, err := s.Store.Append(ctx, stream, expected, events...)
	if errors.Is(err, eventstore.ErrConflict) {
		s.cancel()
	}
	return res, err
}
