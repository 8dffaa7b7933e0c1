package web_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/eventstore"
	"github.com/heraldhq/herald/eventstore/memory"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/projection"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/servertest"
)

// projectionsDB makes a schema of its own in the local PostgreSQL,
// dropped when the test ends, and returns a URL whose connections use it
// and a pool on it.
func projectionsDB(t *testing.T) (string, *pgxpool.Pool) {
	t.Helper()
	admin := testenv.PGPool(t, 2)
	schema := testenv.SQLName("web_")
	if _, err := admin.Exec(t.Context(), "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	testenv.DropAfter(t, admin, "SCHEMA", schema)
	u, err := url.Parse(testenv.PostgresURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	pool, err := pgxpool.New(context.Background(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return u.String(), pool
}

// summaryProjection counts events by type, from store.
func summaryProjection(t *testing.T, pool *pgxpool.Pool, store eventstore.Store, name string) *projection.Projector {
	t.Helper()
	pr, err := projection.New(t.Context(), pool, store, projection.Config{
		Name: name, BatchSize: 100, Poll: 20 * time.Millisecond,
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
	return pr
}

// runProjector runs pr until the test ends.
func runProjector(t *testing.T, pr *projection.Projector) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pr.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && ctx.Err() == nil {
			t.Errorf("projector %s: %v", pr.Name(), err)
		}
	})
}

// TestProjectionPages runs a projection over 1,000 events and follows it
// on the projection pages: caught up, then rebuilt from the page.
func TestProjectionPages(t *testing.T) {
	t.Parallel()
	dbURL, pool := projectionsDB(t)
	srv := servertest.Start(t, server.Config{ProjectionsURL: dbURL})
	base := srv.AdminURL()

	code, body := get(t, base, "/projections")
	if code != http.StatusOK || !strings.Contains(body, "No projections in this database yet") || !strings.Contains(body, `href="/projections"`) {
		t.Fatalf("projection list before any: %d:\n%s", code, body)
	}

	store := memory.New()
	const n = 1000
	for i := 0; i < n; i += 100 {
		evs := make([]*event.Event, 100)
		for j := range evs {
			evs[j] = event.New("orders", fmt.Sprintf("shop.order.t%d.v1", (i+j)%3), []byte(`{}`))
		}
		if _, err := store.Append(t.Context(), fmt.Sprintf("order-%d", i/100), eventstore.Any, evs...); err != nil {
			t.Fatal(err)
		}
	}
	running, idle := testenv.SQLName("summary_"), testenv.SQLName("idle_")
	runProjector(t, summaryProjection(t, pool, store, running))
	summaryProjection(t, pool, store, idle)

	eventually(t, time.Minute, "the projection running and caught up", func() (bool, string) {
		code, body := get(t, base, "/projections/"+running)
		return code == http.StatusOK && strings.Contains(body, `<dd id="checkpoint">1,000</dd>`) && strings.Contains(body, `running</span>`), body
	})
	code, body = get(t, base, "/projections")
	if code != http.StatusOK || !strings.Contains(body, `href="/projections/`+running+`"`) || !strings.Contains(body, `href="/projections/`+idle+`"`) ||
		!strings.Contains(body, `hx-trigger="every 5s"`) {
		t.Fatalf("projection list: %d, want both projections, refreshing:\n%s", code, body)
	}
	code, body = get(t, base, "/projections?state=stopped")
	if code != http.StatusOK || !strings.Contains(body, `href="/projections/`+idle+`"`) || strings.Contains(body, `href="/projections/`+running+`"`) {
		t.Fatalf("stopped projections: %d, want %s only:\n%s", code, idle, body)
	}
	if _, body := get(t, base, "/projections/"+idle); !strings.Contains(body, "never: no projector has run it") || !strings.Contains(body, "Never rebuilt") {
		t.Fatalf("idle projection:\n%s", body)
	}

	code, body = post(t, base, "/projections/"+running+"/rebuild", nil)
	if code != http.StatusOK || !strings.Contains(body, "Asked for a rebuild of "+running) {
		t.Fatalf("rebuild: %d:\n%s", code, body)
	}
	eventually(t, time.Minute, "the rebuild done, at 100%", func() (bool, string) {
		code, body := get(t, base, "/projections/"+running)
		return code == http.StatusOK && strings.Contains(body, "Last rebuild</h3>") && strings.Contains(body, `value="100"`) &&
			strings.Contains(body, "1,000 events applied") && strings.Contains(body, running+"_g2 (generation 2)"), body
	})

	for _, tc := range []struct {
		name, method, path string
		code               int
		says               string
	}{
		{"unknown projection", "GET", "/projections/" + testenv.SQLName("nope_"), http.StatusNotFound, "no projection"},
		{"bad name", "GET", "/projections/no%20such", http.StatusNotFound, "is not a projection name"},
		{"bad state", "GET", "/projections?state=bogus", http.StatusBadRequest, "want running, rebuilding, stopped or failed"},
		{"rebuild unknown", "POST", "/projections/" + testenv.SQLName("nope_") + "/rebuild", http.StatusNotFound, "no projection"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var code int
			var body string
			if tc.method == "POST" {
				code, body = post(t, base, tc.path, nil)
			} else {
				code, body = get(t, base, tc.path)
			}
			if code != tc.code || !strings.Contains(body, tc.says) || !strings.Contains(body, "<!doctype html>") {
				t.Fatalf("%s %s: %d, want %d saying %q in a page:\n%s", tc.method, tc.path, code, tc.code, tc.says, body)
			}
		})
	}

	// A rebuild asked for twice: the second is refused in the page.
	if _, err := projection.RequestRebuild(t.Context(), pool, idle); err != nil {
		t.Fatal(err)
	}
	code, body = post(t, base, "/projections/"+idle+"/rebuild", nil)
	if code != http.StatusConflict || !strings.Contains(body, "rebuild") || !strings.Contains(body, "Rebuild asked for") {
		t.Fatalf("second rebuild: %d, want 409 on the projection's page:\n%s", code, body)
	}
}

// TestProjectionPagesOff: a server without the projections' database
// says how to give it one, and does not link the page.
func TestProjectionPagesOff(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, server.Config{})
	code, body := get(t, srv.AdminURL(), "/projections")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "--projections-postgres-url") {
		t.Fatalf("projections without a database: %d:\n%s", code, body)
	}
	if _, body := get(t, srv.AdminURL(), "/"); strings.Contains(body, `href="/projections"`) || !strings.Contains(body, `href="/sagas"`) {
		t.Fatalf("the overview's navigation, want sagas and no projections:\n%s", body)
	}
}
