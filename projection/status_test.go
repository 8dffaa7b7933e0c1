package projection_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/eventstore"
	"github.com/heraldhq/herald/eventstore/memory"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/projection"
)

// TestStatusAndRequestedRebuild runs a projector, reads its state the way
// tools do, and has it rebuild on request.
func TestStatusAndRequestedRebuild(t *testing.T) {
	p := testenv.PGPool(t, 8)
	s := memory.New()
	fill(t, s, 3000)
	pr := summary(t, p, s)
	ctx, cancel := context.WithCancel(t.Context())
	runErr := make(chan error, 1)
	go func() { runErr <- pr.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-runErr
	})

	var st projection.Status
	testenv.Eventually(t, 30*time.Second, "the projector running, caught up with 3000 events", func() bool {
		var err error
		st, err = projection.Lookup(t.Context(), p, pr.Name())
		return err == nil && st.State == projection.StateRunning && st.Checkpoint == 3000 && st.Head == 3000 && st.Lag == 0
	})
	if st.Heartbeat.IsZero() || st.Generation != 1 || st.Rebuild != nil {
		t.Fatalf("status %+v: want a heartbeat, generation 1 and no rebuild", st)
	}
	all, err := projection.List(t.Context(), p)
	if err != nil || !slices.ContainsFunc(all, func(s projection.Status) bool { return s.Name == pr.Name() }) {
		t.Fatalf("list: %v, %v; want %s among them", all, err, pr.Name())
	}

	st, err = projection.RequestRebuild(t.Context(), p, pr.Name())
	if err != nil || st.Rebuild == nil || st.Rebuild.Requested.IsZero() {
		t.Fatalf("request rebuild: %+v, %v; want it requested", st.Rebuild, err)
	}
	if _, err := projection.RequestRebuild(t.Context(), p, pr.Name()); !errors.Is(err, projection.ErrRebuilding) {
		t.Fatalf("second request: %v, want ErrRebuilding", err)
	}
	testenv.Eventually(t, 30*time.Second, "the requested rebuild to end", func() bool {
		st, err = projection.Lookup(t.Context(), p, pr.Name())
		return err == nil && st.Rebuild != nil && !st.Rebuild.Ended.IsZero()
	})
	if r := st.Rebuild; r.Error != "" || r.Applied != 3000 || r.Target != 3000 || !r.Requested.IsZero() || st.Generation != 2 || !strings.HasSuffix(st.Table, "_g2") {
		t.Fatalf("after the rebuild: %+v, rebuild %+v; want 3000 applied into table _g2", st, *r)
	}
	got, err := counts(t.Context(), p, pr.Name())
	if err != nil {
		t.Fatal(err)
	}
	if w := want(t, s); fmt.Sprint(got) != fmt.Sprint(w) {
		t.Errorf("rebuilt read model %v, want %v", got, w)
	}

	cancel()
	if err := <-runErr; err != nil {
		t.Fatalf("run: %v", err)
	}
	runErr <- nil // for the cleanup
	if st, err = projection.Lookup(t.Context(), p, pr.Name()); err != nil || st.State != projection.StateStopped {
		t.Fatalf("after Run returned: %+v, %v; want stopped", st, err)
	}
	if _, err := projection.Lookup(t.Context(), p, "no_such_"+strings.ToLower(rand.Text())[:8]); !errors.Is(err, projection.ErrNotFound) {
		t.Fatalf("lookup of an unknown projection: %v, want ErrNotFound", err)
	}
	if _, err := projection.RequestRebuild(t.Context(), p, "bad name;"); !errors.Is(err, projection.ErrNotFound) {
		t.Fatalf("rebuild of a malformed name: %v, want ErrNotFound", err)
	}
}

// TestStatusBehindAndFailed has the handler fail part-way: the state says
// how far behind the projection stopped, and why.
func TestStatusBehindAndFailed(t *testing.T) {
	p := testenv.PGPool(t, 8)
	s := memory.New()
	fill(t, s, 1000)
	name := "failing_" + strings.ToLower(rand.Text())[:10]
	pr, err := projection.New(t.Context(), p, s, projection.Config{
		Name: name, BatchSize: 100, Poll: 10 * time.Millisecond,
		Create: func(table string) string { return "CREATE TABLE " + table + " (position bigint PRIMARY KEY)" },
		Handle: func(ctx context.Context, tx pgx.Tx, table string, rec *eventstore.Record) error {
			if rec.Position == 651 {
				return errors.New("read model rejects position 651")
			}
			_, err := tx.Exec(ctx, "INSERT INTO "+table+" (position) VALUES ($1)", int64(rec.Position))
			return err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pr.Drop(context.Background()) })
	err = pr.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "position 651") {
		t.Fatalf("run: %v, want the handler's error", err)
	}
	st, err := projection.Lookup(t.Context(), p, name)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != projection.StateFailed || !strings.Contains(st.LastError, "position 651") ||
		st.Checkpoint != 600 || st.Head != 1000 || st.Lag != 400 || st.LagSeconds <= 0 {
		t.Fatalf("status %+v: want failed at checkpoint 600 of head 1000, lag 400, with the error", st)
	}
}
