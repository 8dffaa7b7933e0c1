package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/testenv"
)

var emb *natsjs.Embedded

func TestMain(m *testing.M) {
	testenv.MainWithNATS(m, natsjs.EmbeddedConfig{}, func(e *natsjs.Embedded) { emb = e },
		// database/sql keeps a connection opener per open DB until Close.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"))
}

func sqliteStore(t testing.TB) *SQLite {
	t.Helper()
	s, err := OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "audit.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func postgresStore(t testing.TB) *Postgres {
	t.Helper()
	testenv.Need(t, "PostgreSQL", testenv.HostPort(testenv.PostgresURL))
	schema := strings.ReplaceAll(testenv.Unique("audit_test"), "-", "_")
	s, err := OpenPostgres(context.Background(), testenv.PostgresURL, WithSchema(schema))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = s.pool.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		_ = s.Close()
	})
	return s
}

// stores runs f against each store.
func stores(t *testing.T, f func(t *testing.T, s Store)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		f(t, sqliteStore(t))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		f(t, postgresStore(t))
	})
}

func TestStore(t *testing.T) {
	t.Parallel()
	stores(t, func(t *testing.T, s Store) {
		ctx := t.Context()
		base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		var recs []Record
		for i := range 30 {
			recs = append(recs, Record{
				Topic: "orders", Seq: uint64(i + 1), Stored: base.Add(time.Duration(i) * time.Second),
				ID: fmt.Sprintf("e-%02d", i), Type: []string{"placed.v1", "paid.v1", "shipped.v1"}[i%3],
				Source: "shop", Subject: fmt.Sprintf("o-%d", i%5), CorrelationID: fmt.Sprintf("c-%d", i%2),
				// Event times run backwards in the second half: queries
				// order by event time, not by position.
				Time:    base.Add(time.Duration(min(i, 40-i)) * time.Minute),
				Payload: []byte(fmt.Sprintf(`{"i":%d}`, i)), PayloadSize: 8, ContentType: "application/json",
			})
		}
		recs[7].DeadLetter, recs[8].Redrives = true, 2
		recs[9].Payload, recs[9].PayloadSize = nil, 100_000
		recs[10].CorrelationID = ""
		if err := s.Write(ctx, recs[:20], []Position{{Stream: "orders", Created: base, Seq: 20}}); err != nil {
			t.Fatal(err)
		}
		if err := s.Write(ctx, recs[20:], []Position{{Stream: "orders", Created: base, Seq: 30}, {Stream: "other", Created: base.Add(time.Hour), Seq: 0}}); err != nil {
			t.Fatal(err)
		}
		pos, err := s.Positions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if p := pos["orders"]; p.Seq != 30 || !p.Created.Equal(base) || len(pos) != 2 {
			t.Fatalf("positions %+v", pos)
		}
		want := func(q Query, pick func(Record) bool) {
			t.Helper()
			got, err := s.Query(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			var exp []Record
			for _, r := range recs {
				if pick(r) {
					exp = append(exp, r)
				}
			}
			slices.SortStableFunc(exp, func(a, b Record) int { return a.Time.Compare(b.Time) })
			if q.Limit > 0 && len(exp) > q.Limit {
				exp = exp[:q.Limit]
			}
			if len(got) != len(exp) {
				t.Fatalf("query %+v: %d records, want %d", q, len(got), len(exp))
			}
			for i, g := range got {
				e := exp[i]
				if g.ID != e.ID || g.Seq != e.Seq || !g.Time.Equal(e.Time) || !g.Stored.Equal(e.Stored) || g.Type != e.Type ||
					g.Subject != e.Subject || g.CorrelationID != e.CorrelationID || g.DeadLetter != e.DeadLetter ||
					g.Redrives != e.Redrives || g.PayloadSize != e.PayloadSize || g.Topic != e.Topic || g.Source != e.Source {
					t.Fatalf("query %+v: record %d is %+v, want %+v", q, i, g, e)
				}
				if q.NoPayload && g.Payload != nil || !q.NoPayload && string(g.Payload) != string(e.Payload) {
					t.Fatalf("query %+v: payload %q, want %q", q, g.Payload, e.Payload)
				}
				if g.Cursor == "" {
					t.Fatal("record without cursor")
				}
			}
		}
		want(Query{CorrelationID: "c-1"}, func(r Record) bool { return r.CorrelationID == "c-1" })
		want(Query{CorrelationID: "c-0", NoPayload: true}, func(r Record) bool { return r.CorrelationID == "c-0" })
		want(Query{Subject: "o-3", Type: "placed.v1"}, func(r Record) bool { return r.Subject == "o-3" && r.Type == "placed.v1" })
		since, until := base.Add(5*time.Minute), base.Add(12*time.Minute)
		want(Query{Type: "paid.v1", Since: since, Until: until}, func(r Record) bool {
			return r.Type == "paid.v1" && !r.Time.Before(since) && r.Time.Before(until)
		})
		want(Query{Type: "paid.v1", Topic: "nope"}, func(Record) bool { return false })
		want(Query{CorrelationID: "c-1", Limit: 4}, func(r Record) bool { return r.CorrelationID == "c-1" })

		// Paging with cursors returns everything once, in order.
		var paged []string
		q := Query{Type: "shipped.v1", Limit: 3}
		for {
			page, err := s.Query(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range page {
				paged = append(paged, r.ID)
			}
			if len(page) < q.Limit {
				break
			}
			q.After = page[len(page)-1].Cursor
		}
		all, _ := s.Query(ctx, Query{Type: "shipped.v1"})
		var ids []string
		for _, r := range all {
			ids = append(ids, r.ID)
		}
		if !slices.Equal(paged, ids) || len(ids) != 10 {
			t.Fatalf("paged %v, all %v", paged, ids)
		}
		if _, err := s.Query(ctx, Query{Topic: "orders"}); !errors.Is(err, ErrInvalidQuery) {
			t.Fatalf("query without a key: %v", err)
		}
	})
}

func TestTree(t *testing.T) {
	t.Parallel()
	r := func(id, cause string, opts ...func(*Record)) Record {
		rec := Record{ID: id, CausationID: cause, CorrelationID: "c"}
		for _, o := range opts {
			o(&rec)
		}
		return rec
	}
	dlq := func(r *Record) { r.DeadLetter = true }
	redriven := func(r *Record) { r.Redrives = 1 }
	roots := Tree([]Record{
		r("cmd", ""),
		r("placed", "cmd"),
		r("paid", "placed"),
		r("reserved", "placed"),
		r("reserved", "placed", dlq),
		r("reserved", "placed", redriven),
		r("shipped", "reserved"),
		r("orphan", "missing"),
		r("self", "self"),
		r("early", "late"),
		r("late", "early"),
	})
	var out []string
	var walk func(ns []*Node, depth int)
	walk = func(ns []*Node, depth int) {
		for _, n := range ns {
			line := strings.Repeat("  ", depth) + n.ID
			if n.DeadLettered {
				line += " dlq"
			}
			if n.Redriven > 0 {
				line += fmt.Sprintf(" redriven=%d", n.Redriven)
			}
			out = append(out, line)
			walk(n.Children, depth+1)
		}
	}
	walk(roots, 0)
	want := []string{
		"cmd", "  placed", "    paid", "    reserved dlq redriven=1", "      shipped",
		"orphan", "self", "early", "  late",
	}
	if !slices.Equal(out, want) {
		t.Fatalf("tree:\n%s\nwant:\n%s", strings.Join(out, "\n"), strings.Join(want, "\n"))
	}
	b, err := json.Marshal(roots)
	if err != nil {
		t.Fatal(err)
	}
	var back []*Node
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back) != 4 || back[0].Children[0].Children[1].Children[0].ID != "shipped" || !back[0].Children[0].Children[1].DeadLettered {
		t.Fatalf("json round trip: %s", b)
	}
}

func TestRecordJSON(t *testing.T) {
	t.Parallel()
	for _, payload := range [][]byte{[]byte(`{"a":1}`), {0xff, 0x00}, nil} {
		r := Record{Topic: "t", Seq: 3, ID: "e", Type: "x.v1", Time: time.Unix(5, 0).UTC(), Stored: time.Unix(6, 0).UTC(), Payload: payload, PayloadSize: len(payload)}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var back Record
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if string(back.Payload) != string(payload) || back.ID != "e" || !back.Time.Equal(r.Time) {
			t.Fatalf("%s -> %+v", b, back)
		}
		if json.Valid(payload) && !strings.Contains(string(b), `"data":{"a":1}`) {
			t.Fatalf("JSON payload not inline: %s", b)
		}
	}
}

func FuzzQueryCursor(f *testing.F) {
	for _, s := range []string{"1-2", "-1-2", "1--2", "x", "", "99999999999999999999-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, c string) {
		q := Query{Type: "t", After: c}
		if err := q.Validate(); err != nil {
			if !errors.Is(err, ErrInvalidQuery) {
				t.Fatalf("%v does not wrap ErrInvalidQuery", err)
			}
			return
		}
		if c == "" {
			return // no cursor: from the start
		}
		tn, n, err := parseCursor(c)
		if err != nil || formatCursor(tn, n) == "" {
			t.Fatalf("accepted cursor %q does not parse", c)
		}
	})
}
