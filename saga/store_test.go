package saga_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/saga"
)

func pgStore(t testing.TB) *saga.PGStore {
	t.Helper()
	pool := testenv.PGPool(t, 0)
	table := unique("saga_test_")
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+pgx.Identifier{table}.Sanitize())
	})
	st, err := saga.NewPGStore(t.Context(), pool, table)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func kvStore(t testing.TB) *saga.KVStore {
	t.Helper()
	b, err := natsjs.New(context.Background(), natsjs.WithEmbedded(emb))
	if err != nil {
		t.Fatal(err)
	}
	bucket := unique("saga_kv_")
	t.Cleanup(func() {
		_ = b.JetStream().DeleteKeyValue(context.Background(), bucket)
		_ = b.JetStream().DeleteKeyValue(context.Background(), bucket+"_active")
		_ = b.Close()
	})
	st, err := saga.NewKVStore(t.Context(), b.JetStream(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Both stores keep the Store contract: unique create, versioned update,
// listing by state oldest first.
func TestStores(t *testing.T) {
	for name, mk := range map[string]func(testing.TB) saga.Store{
		"kv":       func(t testing.TB) saga.Store { return kvStore(t) },
		"postgres": func(t testing.TB) saga.Store { return pgStore(t) },
	} {
		t.Run(name, func(t *testing.T) {
			st := mk(t)
			ctx := t.Context()
			t0 := time.Now().UTC().Truncate(time.Microsecond)
			a := &saga.Instance{ID: "a", Saga: "s", State: saga.Running, Created: t0.Add(time.Second)}
			b := &saga.Instance{ID: "b", Saga: "s", State: saga.Running, Created: t0}
			for _, in := range []*saga.Instance{a, b} {
				if err := st.Create(ctx, in); err != nil {
					t.Fatal(err)
				}
			}
			if err := st.Create(ctx, &saga.Instance{ID: "a", Saga: "s"}); !errors.Is(err, saga.ErrExists) {
				t.Fatalf("second Create: %v, want ErrExists", err)
			}
			if _, err := st.Get(ctx, "zz"); !errors.Is(err, saga.ErrNotFound) {
				t.Fatalf("Get of a missing id: %v, want ErrNotFound", err)
			}
			stale, err := st.Get(ctx, "a")
			if err != nil {
				t.Fatal(err)
			}
			fresh, _ := st.Get(ctx, "a")
			fresh.State, fresh.Error = saga.Compensated, "x"
			if err := st.Update(ctx, fresh); err != nil {
				t.Fatal(err)
			}
			stale.State = saga.Completed
			if err := st.Update(ctx, stale); !errors.Is(err, saga.ErrConflict) {
				t.Fatalf("Update from a stale read: %v, want ErrConflict", err)
			}
			got, err := st.Get(ctx, "a")
			if err != nil || got.State != saga.Compensated || got.Error != "x" || got.Version != fresh.Version {
				t.Fatalf("Get after update = %+v, %v", got, err)
			}
			all, err := st.List(ctx, "")
			if err != nil || fmt.Sprint(idsOf(all)) != "[b a]" {
				t.Fatalf("List all = %v, %v; want [b a]", idsOf(all), err)
			}
			running, err := st.List(ctx, saga.Running)
			if err != nil || fmt.Sprint(idsOf(running)) != "[b]" {
				t.Fatalf("List running = %v, %v; want [b]", idsOf(running), err)
			}
			compensated, err := st.List(ctx, saga.Compensated)
			if err != nil || len(compensated) != 1 || compensated[0].ID != "a" || compensated[0].Version != fresh.Version || compensated[0].Error != "x" {
				t.Fatalf("List compensated = %+v, %v; want a at version %d", compensated, err, fresh.Version)
			}
			if done, err := st.List(ctx, saga.Completed); err != nil || len(done) != 0 {
				t.Fatalf("List completed = %v, %v; want none", idsOf(done), err)
			}
		})
	}
}

func idsOf(ins []*saga.Instance) []string {
	var out []string
	for _, in := range ins {
		out = append(out, in.ID)
	}
	return out
}

// The engine on the PostgreSQL store: a failure at the last step
// compensates the two before it.
func TestEngineOnPostgres(t *testing.T) {
	h := newHarnessOn(t, unique("saga_pg_"), true, pgStore(t), 30*time.Second)
	id := unique("o-")
	if err := h.eng.Start(t.Context(), "order", id, orderData{Fail: "ship"}); err != nil {
		t.Fatal(err)
	}
	h.await(t, id, saga.Compensated)
	if got, want := fmt.Sprint(h.commands(id)), "[t.reserve.v1 t.charge.v1 t.ship.v1 t.charge.undo.v1 t.reserve.undo.v1]"; got != want {
		t.Fatalf("services saw %s, want %s", got, want)
	}
}
