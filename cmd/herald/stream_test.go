package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/eventstore"
	esnats "github.com/heraldhq/herald/eventstore/natsjs"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/projection"
	"github.com/heraldhq/herald/server/admin"
)

func natsConn(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func TestStreamShow(t *testing.T) {
	t.Parallel()
	p := startServe(t, t.TempDir())
	if errOut := p.heraldErr(t, "", "stream", "show", "order-42"); !strings.Contains(errOut, "no event store") {
		t.Fatalf("stream show before any event store exists: %s", errOut)
	}
	st, err := esnats.New(t.Context(), natsConn(t, p.state.NATSURL))
	if err != nil {
		t.Fatal(err)
	}
	evs := make([]*event.Event, 5)
	for i := range evs {
		typ := "shop.order.placed.v1"
		if i == 4 {
			typ = "shop.order.shipped.v1"
		}
		evs[i] = event.New("orders", typ, fmt.Appendf(nil, `{"line": %d, "sku": "sku-%d"}`, i+1, i+1))
		evs[i].DataContentType = "application/json"
	}
	evs[3].Data, evs[3].DataContentType = []byte{0xff, 0x00, 0x01}, "application/octet-stream"
	if _, err := st.Append(t.Context(), "order-42", eventstore.NoStream, evs...); err != nil {
		t.Fatal(err)
	}

	out := p.herald(t, "", "stream", "show", "order-42")
	for _, want := range []string{"stream order-42: version 5", "VERSION", "shop.order.placed.v1", "shop.order.shipped.v1",
		evs[0].ID, `{"line":1,"sku":"sku-1"}`, "(3 bytes, application/octet-stream)"} {
		if !strings.Contains(out, want) {
			t.Fatalf("stream show misses %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "more:") {
		t.Fatalf("stream show of a whole stream offers more:\n%s", out)
	}

	out = p.herald(t, "", "stream", "show", "order-42", "--from", "2", "--limit", "2")
	if !strings.Contains(out, evs[1].ID) || !strings.Contains(out, evs[2].ID) || strings.Contains(out, evs[0].ID) || strings.Contains(out, evs[3].ID) ||
		!strings.Contains(out, "more: herald stream show order-42 --from 4") {
		t.Fatalf("stream show --from 2 --limit 2:\n%s", out)
	}

	var page admin.StreamPage
	out = p.herald(t, "", "stream", "show", "order-42", "--from", "4", "-o", "json")
	if err := json.Unmarshal([]byte(out), &page); err != nil {
		t.Fatalf("json output: %v\n%s", err, out)
	}
	if page.Version != 5 || len(page.Events) != 2 || page.Next != 0 {
		t.Fatalf("page %+v: want versions 4 and 5 of 5", page)
	}
	e4, e5 := page.Events[0], page.Events[1]
	var data5 bytes.Buffer
	if err := json.Compact(&data5, e5.Data); err != nil {
		t.Fatal(err)
	}
	if e4.Version != 4 || string(e4.DataBase64) != string(evs[3].Data) || len(e4.Data) != 0 ||
		e5.Version != 5 || e5.Type != "shop.order.shipped.v1" || data5.String() != `{"line":5,"sku":"sku-5"}` || e5.Position <= e4.Position || e5.Recorded.IsZero() {
		t.Fatalf("events %+v", page.Events)
	}

	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"unknown stream": {[]string{"stream", "show", "order-43"}, "has no events"},
		"bad name":       {[]string{"stream", "show", "order..42"}, "stream name"},
		"limit 0":        {[]string{"stream", "show", "order-42", "--limit", "0"}, "--limit 0"},
		"limit too high": {[]string{"stream", "show", "order-42", "--limit", "5000"}, "want 1 to 1000"},
		"no stream":      {[]string{"stream", "show"}, "accepts 1 arg"},
		"no projections": {[]string{"projection", "list"}, "--projections-postgres-url"},
	} {
		if errOut := p.heraldErr(t, "", tc.args...); !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: %s, want %q", name, errOut, tc.want)
		}
	}
	if err := st.Tombstone(t.Context(), "order-42"); err != nil {
		t.Fatal(err)
	}
	if errOut := p.heraldErr(t, "", "stream", "show", "order-42"); !strings.Contains(errOut, "tombstoned") {
		t.Fatalf("stream show of a tombstoned stream: %s", errOut)
	}
}

func TestProjectionCommands(t *testing.T) {
	t.Parallel()
	testenv.Need(t, "PostgreSQL", testenv.HostPort(testenv.PostgresURL))
	p := startServe(t, t.TempDir(), "--projections-postgres-url", testenv.PostgresURL)
	id := strings.ToLower(rand.Text())[:10]
	st, err := esnats.New(t.Context(), natsConn(t, p.state.NATSURL), esnats.WithStream("ES_CLI_"+id), esnats.WithPrefix("escli."+id))
	if err != nil {
		t.Fatal(err)
	}
	const n = 6000
	for i := 0; i < n; i += 500 {
		evs := make([]*event.Event, 500)
		for j := range evs {
			evs[j] = event.New("orders", fmt.Sprintf("shop.order.t%d.v1", (i+j)%4), []byte(`{}`))
		}
		if _, err := st.Append(t.Context(), fmt.Sprintf("order-%d", i/500), eventstore.Any, evs...); err != nil {
			t.Fatal(err)
		}
	}
	// Positions need not count events: the checkpoint ends at the store's.
	last, err := st.LastPosition(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(t.Context(), testenv.PostgresURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	name := "cli_summary_" + id
	pr, err := projection.New(t.Context(), pool, st, projection.Config{
		Name: name, BatchSize: 200, Poll: 20 * time.Millisecond,
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
	t.Cleanup(func() { _ = pr.Drop(context.Background()) })

	// Before a projector runs: listed, stopped, never seen.
	if out := fields(p.herald(t, "", "projection", "status", name)); !strings.Contains(out, "state stopped") || !strings.Contains(out, "heartbeat never") {
		t.Fatalf("status before any projector ran:\n%s", out)
	}
	ctx, cancel := context.WithCancel(t.Context())
	runErr := make(chan error, 1)
	go func() { runErr <- pr.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-runErr; err != nil {
			t.Errorf("projector: %v", err)
		}
	})
	var ps []projection.Status
	poll(t, "the projection listed running and caught up", func() (bool, string) {
		out := p.herald(t, "", "projection", "list", "-o", "json")
		ps = nil
		if err := json.Unmarshal([]byte(out), &ps); err != nil {
			t.Fatalf("list -o json: %v\n%s", err, out)
		}
		for _, s := range ps {
			if s.Name == name {
				return s.State == projection.StateRunning && s.Checkpoint == last && s.Head == last && s.Lag == 0, fmt.Sprintf("%+v", s)
			}
		}
		return false, out
	})
	out := p.herald(t, "", "projection", "list")
	if !strings.Contains(out, name) || !strings.Contains(out, "running") || !strings.Contains(out, fmt.Sprint(last)) {
		t.Fatalf("projection list:\n%s", out)
	}
	out = fields(p.herald(t, "", "projection", "status", name))
	for _, want := range []string{"state running", fmt.Sprintf("position %d", last), fmt.Sprintf("head %d", last), "lag 0 positions", name + "_g1 (generation 1)"} {
		if !strings.Contains(out, want) {
			t.Fatalf("projection status misses %q:\n%s", want, out)
		}
	}

	stdout, stderr, err := runHerald(t, "", "projection", "rebuild", name, "--admin-url", p.state.AdminURL)
	if err != nil {
		t.Fatalf("projection rebuild: %v\n%s\n%s", err, stdout, stderr)
	}
	if !strings.Contains(stdout, fmt.Sprintf("rebuilt projection %s: 6,000 events into table %s_g2", name, name)) {
		t.Fatalf("projection rebuild says:\n%s", stdout)
	}
	t.Logf("rebuild progress:\n%s", stderr)
	if !strings.Contains(stderr, "] 100%") || !strings.Contains(stderr, fmt.Sprintf("6,000 events, position %d of %d", last, last)) {
		t.Fatalf("projection rebuild drew no progress up to 100%%:\n%s", stderr)
	}
	var got int64
	if err := pool.QueryRow(t.Context(), "SELECT sum(n) FROM "+pgx.Identifier{name}.Sanitize()).Scan(&got); err != nil || got != n {
		t.Fatalf("rebuilt read model holds %d events, %v; want %d", got, err, n)
	}
	out = fields(p.herald(t, "", "projection", "status", name))
	if !strings.Contains(out, "rebuild done") || !strings.Contains(out, "6,000 events in") {
		t.Fatalf("status after the rebuild:\n%s", out)
	}

	for what, tc := range map[string]struct {
		args []string
		want string
	}{
		"status unknown":  {[]string{"projection", "status", "nope_" + id}, "no projection"},
		"rebuild unknown": {[]string{"projection", "rebuild", "nope_" + id}, "no projection"},
		"bad wait":        {[]string{"projection", "rebuild", name, "--wait", "-1s"}, "--wait"},
	} {
		if errOut := p.heraldErr(t, "", tc.args...); !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: %s, want %q", what, errOut, tc.want)
		}
	}
}

// fields joins s's words with single spaces, so column widths do not
// matter to a check.
func fields(s string) string { return strings.Join(strings.Fields(s), " ") }
