package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/outbox"
)

var emb *natsjs.Embedded

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runRelayChild())
	}
	testenv.MainWithNATS(m, natsjs.EmbeddedConfig{Addr: "127.0.0.1:0"}, func(e *natsjs.Embedded) { emb = e })
}

// newOutbox creates a fresh outbox table, dropped after the test.
func newOutbox(t testing.TB, p *pgxpool.Pool, opts ...outbox.Option) *outbox.Outbox {
	t.Helper()
	table := testenv.SQLName("outbox_test_")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := p.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{table}.Sanitize()); err != nil {
			t.Errorf("drop %s: %v", table, err)
		}
	})
	o, err := outbox.New(t.Context(), p, append([]outbox.Option{outbox.WithTable(table), outbox.WithMigrate()}, opts...)...)
	if err != nil {
		t.Fatalf("new outbox %q: %v", table, err)
	}
	return o
}

// natsClient returns a client publishing every event to topic, on the
// embedded server, and the broker under it.
func natsClient(t testing.TB, topic string) (*herald.Client, *natsjs.Broker) {
	t.Helper()
	b, err := natsjs.New(context.Background(), natsjs.WithEmbedded(emb))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = b.JetStream().DeleteStream(ctx, natsjs.StreamName(topic))
		_ = b.Close()
	})
	c, err := herald.Connect(t.Context(), herald.Config{Broker: b, Source: "outbox-test", DefaultTopic: topic})
	if err != nil {
		t.Fatal(err)
	}
	return c, b
}

// published reads topic's stream in order and returns its events.
func published(t testing.TB, b *natsjs.Broker, topic string) []*event.Event {
	t.Helper()
	ctx := context.Background()
	st, err := b.JetStream().Stream(ctx, natsjs.StreamName(topic))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("stream %s: %v", topic, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s info: %v", topic, err)
	}
	out := make([]*event.Event, 0, info.State.Msgs)
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("stream %s message %d: %v", topic, seq, err)
		}
		h := make(map[string]string, len(m.Header))
		for k, v := range m.Header {
			h[k] = v[0]
		}
		e, err := event.NATS.Decode(h, m.Data)
		if err != nil {
			t.Fatalf("stream %s message %d: %v", topic, seq, err)
		}
		out = append(out, e)
	}
	return out
}

func newEvent(key string, seq uint64) *event.Event {
	e := event.New("outbox-test", "test.thing.happened.v1", []byte(`{"n":`+strconv.FormatUint(seq, 10)+`}`))
	e.Subject, e.Sequence = key, seq
	return e
}

func addCommit(t testing.TB, p *pgxpool.Pool, o *outbox.Outbox, events ...*event.Event) {
	t.Helper()
	err := pgx.BeginFunc(t.Context(), p, func(tx pgx.Tx) error { return o.Add(t.Context(), tx, events...) })
	if err != nil {
		t.Fatalf("add %d events: %v", len(events), err)
	}
}

func pending(t testing.TB, o *outbox.Outbox) int64 {
	t.Helper()
	st, err := o.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return st.Pending
}

func ids(es []*event.Event) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

func TestNewAndAddErrors(t *testing.T) {
	p := testenv.PGPool(t, 4)
	o := newOutbox(t, p)
	for name, tc := range map[string]struct {
		opts []outbox.Option
		want string
	}{
		"bad table":     {[]outbox.Option{outbox.WithTable("no spaces")}, "must be a letter or underscore"},
		"three parts":   {[]outbox.Option{outbox.WithTable("a.b.c")}, "want name or schema.name"},
		"missing table": {[]outbox.Option{outbox.WithTable(testenv.SQLName("missing_"))}, "does not exist"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := outbox.New(t.Context(), p, tc.opts...); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := outbox.New(t.Context(), nil); err == nil {
		t.Fatal("New with a nil pool: no error")
	}

	tooMany := make([]*event.Event, outbox.MaxEventsPerAdd+1)
	for i := range tooMany {
		tooMany[i] = newEvent("k", uint64(i+1))
	}
	for name, tc := range map[string]struct {
		events []*event.Event
		want   string
	}{
		"nil event": {[]*event.Event{nil}, "event 0 is nil"},
		"no type":   {[]*event.Event{{ID: "x", Source: "s"}}, `"type" is required`},
		"bad type":  {[]*event.Event{{ID: "x", Source: "s", Type: "has space"}}, "spaces"},
		"too many":  {tooMany, "more than the 1000 allowed"},
	} {
		t.Run(name, func(t *testing.T) {
			err := pgx.BeginFunc(t.Context(), p, func(tx pgx.Tx) error { return o.Add(t.Context(), tx, tc.events...) })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if err := o.Add(t.Context(), nil, newEvent("k", 1)); err == nil {
		t.Fatal("Add with a nil transaction: no error")
	}
	if n := pending(t, o); n != 0 {
		t.Fatalf("%d events pending after failed adds, want 0", n)
	}
}

func TestRelayPublishesCommittedEventsOnly(t *testing.T) {
	p := testenv.PGPool(t, 4)
	o := newOutbox(t, p)
	topic := testenv.SQLName("outbox_")
	c, b := natsClient(t, topic)

	kept := []*event.Event{newEvent("a", 1), newEvent("b", 1), newEvent("a", 2)}
	addCommit(t, p, o, kept[:2]...)
	tx, err := p.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Add(t.Context(), tx, newEvent("a", 99)); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	addCommit(t, p, o, kept[2])

	r, err := outbox.NewRelay(t.Context(), p, c, outbox.WithOutbox(o))
	if err != nil {
		t.Fatal(err)
	}
	n, err := r.Step(t.Context())
	if err != nil || n != 3 {
		t.Fatalf("Step = %d, %v; want 3 events published", n, err)
	}
	got := published(t, b, topic)
	if fmt.Sprint(ids(got)) != fmt.Sprint(ids(kept)) {
		t.Fatalf("published %v, want %v (commit order, rolled back event left out)", ids(got), ids(kept))
	}
	if got[0].Subject != "a" || got[0].Sequence != 1 || string(got[0].Data) != `{"n":1}` || got[0].Source != "outbox-test" {
		t.Fatalf("first event came out as %+v", got[0])
	}
	if n := pending(t, o); n != 0 {
		t.Fatalf("%d events pending after the relay published them, want 0", n)
	}
	if n, err := r.Step(t.Context()); err != nil || n != 0 {
		t.Fatalf("second Step = %d, %v; want nothing to do", n, err)
	}
}

// rowID returns the largest outbox row id tx sees.
func rowID(t testing.TB, tx pgx.Tx, o *outbox.Outbox) int64 {
	t.Helper()
	var id int64
	if err := tx.QueryRow(t.Context(), "SELECT max(id) FROM "+pgx.Identifier{o.Table()}.Sanitize()).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// A transaction that took its row id first but commits last is not
// skipped: the relay keeps no cursor.
func TestOutOfOrderCommitsAreNotSkipped(t *testing.T) {
	p := testenv.PGPool(t, 6)
	o := newOutbox(t, p)
	topic := testenv.SQLName("outbox_")
	c, b := natsClient(t, topic)
	r, err := outbox.NewRelay(t.Context(), p, c, outbox.WithOutbox(o))
	if err != nil {
		t.Fatal(err)
	}

	early, late := newEvent("slow", 1), newEvent("fast", 1)
	t1, err := p.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = t1.Rollback(context.Background()) }()
	if err := o.Add(t.Context(), t1, early); err != nil {
		t.Fatal(err)
	}
	id1 := rowID(t, t1, o)
	t2, err := p.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Add(t.Context(), t2, late); err != nil {
		t.Fatal(err)
	}
	id2 := rowID(t, t2, o)
	if id1 >= id2 {
		t.Fatalf("row ids %d, %d: the first transaction should hold the smaller id", id1, id2)
	}
	if err := t2.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n, err := r.Step(t.Context()); err != nil || n != 1 {
		t.Fatalf("Step with only the later row committed = %d, %v; want 1", n, err)
	}
	if err := t1.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n, err := r.Step(t.Context()); err != nil || n != 1 {
		t.Fatalf("Step after the earlier row committed = %d, %v; want 1", n, err)
	}
	if got, want := ids(published(t, b, topic)), ids([]*event.Event{late, early}); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("published %v, want %v", got, want)
	}
}

// A second transaction adding an event of a key another open transaction
// holds waits for it, so the key's events stay in commit order.
func TestSameKeyTransactionsAreSerialised(t *testing.T) {
	p := testenv.PGPool(t, 6)
	o := newOutbox(t, p)
	topic := testenv.SQLName("outbox_")
	c, b := natsClient(t, topic)

	first, second := newEvent("k", 1), newEvent("k", 2)
	t1, err := p.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = t1.Rollback(context.Background()) }()
	if err := o.Add(t.Context(), t1, first); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- pgx.BeginFunc(context.Background(), p, func(tx pgx.Tx) error { return o.Add(context.Background(), tx, second) })
	}()
	testenv.Eventually(t, 30*time.Second, "the second transaction to wait for the key's lock", func() bool {
		var waiting bool
		err := p.QueryRow(t.Context(), "SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)").Scan(&waiting)
		return err == nil && waiting
	})
	select {
	case err := <-done:
		t.Fatalf("second transaction finished while the first held the key: %v", err)
	default:
	}
	if err := t1.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r, err := outbox.NewRelay(t.Context(), p, c, outbox.WithOutbox(o))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := r.Step(t.Context()); err != nil || n != 2 {
		t.Fatalf("Step = %d, %v; want 2", n, err)
	}
	if got, want := ids(published(t, b, topic)), ids([]*event.Event{first, second}); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("published %v, want %v", got, want)
	}
}

// lossyPublisher publishes, then reports failure for the first n calls, as
// when the confirmation arrives but the relay dies before deleting.
type lossyPublisher struct {
	outbox.Publisher
	fail atomic.Int32
}

func (l *lossyPublisher) Publish(ctx context.Context, events ...*event.Event) error {
	if err := l.Publisher.Publish(ctx, events...); err != nil {
		return err
	}
	if l.fail.Add(-1) >= 0 {
		return errors.New("confirmation lost")
	}
	return nil
}

func TestRepublishIsDeduplicated(t *testing.T) {
	p := testenv.PGPool(t, 4)
	o := newOutbox(t, p)
	topic := testenv.SQLName("outbox_")
	c, b := natsClient(t, topic)
	lp := &lossyPublisher{Publisher: c}
	lp.fail.Store(2)
	reg := prometheus.NewRegistry()
	r, err := outbox.NewRelay(t.Context(), p, lp, outbox.WithOutbox(o), outbox.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	want := []*event.Event{newEvent("a", 1), newEvent("a", 2), newEvent("b", 1)}
	addCommit(t, p, o, want...)
	for i := range 2 {
		if _, err := r.Step(t.Context()); err == nil {
			t.Fatalf("Step %d: no error from a publisher that failed", i)
		}
	}
	if n := pending(t, o); n != 3 {
		t.Fatalf("%d events pending after failed publishes, want 3 kept", n)
	}
	if n, err := r.Step(t.Context()); err != nil || n != 3 {
		t.Fatalf("Step = %d, %v; want 3", n, err)
	}
	if got := ids(published(t, b, topic)); fmt.Sprint(got) != fmt.Sprint(ids(want)) {
		t.Fatalf("stream holds %v, want each event once: %v", got, ids(want))
	}
	if got := counter(t, reg, "herald_outbox_published_total"); got != 3 {
		t.Fatalf("herald_outbox_published_total = %v, want 3", got)
	}
}

// counter returns the value of counter family name in reg.
func counter(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no single-series counter %s in the registry", name)
	return 0
}

// Two relays on one table while four writers add events of shared keys:
// the stream holds every event once, each key's in commit order.
func TestTwoRelays(t *testing.T) {
	p := testenv.PGPool(t, 16)
	o := newOutbox(t, p)
	topic := testenv.SQLName("outbox_")
	c, b := natsClient(t, topic)
	seqTable := testenv.SQLName("outbox_seq_")
	if _, err := p.Exec(t.Context(), "CREATE TABLE "+seqTable+" (key text PRIMARY KEY, n bigint NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = p.Exec(context.Background(), "DROP TABLE IF EXISTS "+seqTable) })

	ctx, cancel := context.WithCancel(t.Context())
	var relays sync.WaitGroup
	counts := make([]*countingPublisher, 2)
	for i := range counts {
		counts[i] = &countingPublisher{Publisher: c}
		r, err := outbox.NewRelay(ctx, p, counts[i], outbox.WithOutbox(o), outbox.WithBatch(50), outbox.WithPollInterval(20*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		relays.Go(func() {
			if err := r.Run(ctx); err != nil {
				t.Errorf("relay %d: %v", i, err)
			}
		})
	}
	defer func() { cancel(); relays.Wait() }()

	const writers, perWriter, keys = 4, 250, 10
	var w sync.WaitGroup
	for wi := range writers {
		w.Go(func() {
			for j := range perWriter {
				key := "k" + strconv.Itoa((wi*7+j)%keys)
				err := pgx.BeginFunc(ctx, p, func(tx pgx.Tx) error {
					var n uint64
					// The business write: the key's next version.
					if err := tx.QueryRow(ctx, "INSERT INTO "+seqTable+" VALUES ($1, 1) ON CONFLICT (key) DO UPDATE SET n = "+seqTable+".n + 1 RETURNING n", key).Scan(&n); err != nil {
						return err
					}
					return o.Add(ctx, tx, newEvent(key, n))
				})
				if err != nil {
					t.Errorf("writer %d: %v", wi, err)
					return
				}
			}
		})
	}
	w.Wait()
	const total = writers * perWriter
	testenv.Eventually(t, 60*time.Second, "the relays to empty the outbox", func() bool { return pending(t, o) == 0 })
	got := published(t, b, topic)
	if len(got) != total {
		t.Fatalf("stream holds %d events, want %d", len(got), total)
	}
	seen := map[string]bool{}
	last := map[string]uint64{}
	for i, e := range got {
		if seen[e.ID] {
			t.Fatalf("event %s stored twice", e.ID)
		}
		seen[e.ID] = true
		if e.Sequence != last[e.Subject]+1 {
			t.Fatalf("stream message %d: key %s version %d follows %d", i+1, e.Subject, e.Sequence, last[e.Subject])
		}
		last[e.Subject] = e.Sequence
	}
	t.Logf("relay 0 published %d, relay 1 %d", counts[0].n.Load(), counts[1].n.Load())
}

type countingPublisher struct {
	outbox.Publisher
	n atomic.Int64
}

func (c *countingPublisher) Publish(ctx context.Context, events ...*event.Event) error {
	err := c.Publisher.Publish(ctx, events...)
	if err == nil {
		c.n.Add(int64(len(events)))
	}
	return err
}

// The relay wakes on NOTIFY well before its poll interval.
func TestRelayWakesOnNotify(t *testing.T) {
	p := testenv.PGPool(t, 4)
	o := newOutbox(t, p)
	topic := testenv.SQLName("outbox_")
	c, b := natsClient(t, topic)
	r, err := outbox.NewRelay(t.Context(), p, c, outbox.WithOutbox(o), outbox.WithPollInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for i := range 3 {
		addCommit(t, p, o, newEvent("n", uint64(i+1)))
		testenv.Eventually(t, 30*time.Second, fmt.Sprintf("event %d to be published without polling", i+1), func() bool {
			return len(published(t, b, topic)) == i+1
		})
	}
}
