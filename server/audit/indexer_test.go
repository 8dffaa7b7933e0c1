package audit

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/internal/testenv"
)

func newBroker(t testing.TB) *natsjs.Broker {
	t.Helper()
	return brokerOn(t, emb)
}

// ownServer runs an embedded server for one test, so figures summed over
// every topic (Behind) are the test's own.
func ownServer(t testing.TB) *natsjs.Embedded {
	t.Helper()
	e, err := natsjs.RunEmbedded(context.Background(), natsjs.EmbeddedConfig{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	return e
}

func brokerOn(t testing.TB, e *natsjs.Embedded) *natsjs.Broker {
	t.Helper()
	b, err := natsjs.New(context.Background(), natsjs.WithEmbedded(e))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func dropTopics(t testing.TB, b *natsjs.Broker, topics ...string) {
	t.Helper()
	t.Cleanup(func() {
		for _, tp := range topics {
			_ = b.JetStream().DeleteStream(context.Background(), natsjs.StreamName(tp))
		}
	})
}

// runIndexer runs an indexer until the returned stop is called (or the
// test ends).
func runIndexer(t testing.TB, b *natsjs.Broker, s Store, opts ...Option) (*Indexer, func()) {
	t.Helper()
	ix, err := NewIndexer(b.JetStream(), s, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := ix.Run(ctx); err != nil {
			t.Errorf("indexer: %v", err)
		}
	})
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return ix, stop
}

func sync10s(t testing.TB, ix *Indexer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := ix.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestIndexerCorrelations indexes 10,000 events over 100 correlation ids
// in two topics and checks that each correlation's query returns exactly
// its events, in order.
func TestIndexerCorrelations(t *testing.T) {
	t.Parallel()
	stores(t, func(t *testing.T, s Store) {
		b := newBroker(t)
		ctx := t.Context()
		topics := []string{testenv.Unique("orders"), testenv.Unique("payments")}
		dropTopics(t, b, topics...)
		ix, _ := runIndexer(t, b, s)

		const n, corrs = 10_000, 100
		base := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
		tag := testenv.Unique("c")
		ids := make([]string, n)
		byCorr := map[string][]string{}
		var msgs []*broker.Message
		for i := range n {
			corr := fmt.Sprintf("%s-%d", tag, i%corrs)
			e := event.New("shop", fmt.Sprintf("shop.step%d.v1", i%3), []byte(fmt.Sprintf(`{"i":%d}`, i)))
			e.Time = base.Add(time.Duration(i) * time.Millisecond)
			e.Subject = fmt.Sprintf("%s-o-%d", tag, i%37)
			e.CorrelationID = corr
			if i >= corrs {
				e.CausationID = ids[i-corrs]
			}
			ids[i] = e.ID
			byCorr[corr] = append(byCorr[corr], e.ID)
			h := map[string]string{}
			event.NATS.Encode(e, h)
			msgs = append(msgs, &broker.Message{Topic: topics[i%2], Route: e.Type, Key: e.Subject, ID: e.ID, Header: h, Data: e.Data})
			if len(msgs) == 1000 {
				if err := b.Publish(ctx, msgs...); err != nil {
					t.Fatal(err)
				}
				msgs = msgs[:0]
			}
		}
		start := time.Now()
		sync10s(t, ix)
		t.Logf("indexed %d events in %v after the last publish", n, time.Since(start).Round(time.Millisecond))

		for c, want := range byCorr {
			recs, err := ix.Query(ctx, Query{CorrelationID: c})
			if err != nil {
				t.Fatal(err)
			}
			got := make([]string, len(recs))
			for i, r := range recs {
				got[i] = r.ID
				if r.CorrelationID != c || r.Source != "shop" || !slices.Contains(topics, r.Topic) || r.Seq == 0 || !strings.HasPrefix(string(r.Payload), `{"i":`) {
					t.Fatalf("record %+v", r)
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("correlation %s: %d events %v..., want %d in publish order", c, len(got), got[:min(3, len(got))], len(want))
			}
		}
		// A causation chain of 100 events.
		recs, err := ix.Query(ctx, Query{CorrelationID: tag + "-7", NoPayload: true})
		if err != nil {
			t.Fatal(err)
		}
		roots := Tree(recs)
		depth := 0
		for n := roots; len(n) == 1; n = n[0].Children {
			depth++
		}
		if len(roots) != 1 || depth != n/corrs {
			t.Fatalf("trace: %d roots, depth %d", len(roots), depth)
		}
		// By subject, and by type in a time range.
		recs, err = ix.Query(ctx, Query{Subject: tag + "-o-5", Limit: MaxLimit})
		if err != nil || len(recs) != (n+36-5)/37 {
			t.Fatalf("subject query: %d records, %v", len(recs), err)
		}
		since, until := base.Add(2*time.Second), base.Add(3*time.Second)
		recs, err = ix.Query(ctx, Query{Type: "shop.step1.v1", Topic: topics[1], Since: since, Until: until, Limit: MaxLimit})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.Time.Before(since) || !r.Time.Before(until) || r.Topic != topics[1] {
				t.Fatalf("out of range: %+v", r)
			}
		}
		// i in [2000, 3000) with i%3 == 1 and i%2 == 1: i%6 == 1.
		want := 0
		for i := 2000; i < 3000; i++ {
			if i%6 == 1 {
				want++
			}
		}
		if len(recs) != want {
			t.Fatalf("type query in a range: %d records", len(recs))
		}
	})
}

func TestIndexerResumesWithoutGapsOrDuplicates(t *testing.T) {
	t.Parallel()
	srv := ownServer(t)
	b := brokerOn(t, srv)
	ctx := t.Context()
	s := sqliteStore(t)
	topic := testenv.Unique("resume")
	dropTopics(t, b, topic, topic+".dlq")
	publish := func(from, to int, typ string, payload func(int) []byte) {
		t.Helper()
		var msgs []*broker.Message
		for i := from; i < to; i++ {
			e := event.New("svc", typ, payload(i))
			h := map[string]string{}
			event.NATS.Encode(e, h)
			msgs = append(msgs, &broker.Message{Topic: topic, Route: typ, ID: e.ID, Header: h, Data: e.Data})
		}
		if err := b.Publish(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	small := func(i int) []byte { return []byte(fmt.Sprintf(`{"i":%d}`, i)) }
	publish(0, 500, "t.v1", small)
	idle, err := NewIndexer(b.JetStream(), s)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := idle.Behind(ctx); err != nil || n != 500 {
		t.Fatalf("behind %d %v before indexing, want 500", n, err)
	}
	ix, stop := runIndexer(t, b, s, WithBatch(64, 20*time.Millisecond), WithMaxPayload(64))
	sync10s(t, ix)
	stop()
	publish(500, 800, "t.v1", small)
	ix, _ = runIndexer(t, b, s, WithBatch(64, 20*time.Millisecond), WithMaxPayload(64))
	sync10s(t, ix)
	seqs := func() []uint64 {
		recs, err := s.Query(ctx, Query{Type: "t.v1", Topic: topic, Limit: MaxLimit, NoPayload: true})
		if err != nil {
			t.Fatal(err)
		}
		var out []uint64
		for _, r := range recs {
			out = append(out, r.Seq)
		}
		slices.Sort(out)
		return out
	}
	got := seqs()
	if len(got) != 800 || got[0] != 1 || got[799] != 800 || slices.Compact(slices.Clone(got)) == nil || len(slices.Compact(slices.Clone(got))) != 800 {
		t.Fatalf("after a restart the index holds %d records of seqs %v..%v", len(got), got[0], got[len(got)-1])
	}

	// A payload over the limit is read back from the stream.
	publish(800, 801, "big.v1", func(int) []byte { return []byte(`"` + strings.Repeat("x", 200) + `"`) })
	// Dead letters and messages that are not CloudEvents are indexed too.
	if err := b.Publish(ctx, &broker.Message{Topic: topic + ".dlq", Route: "raw.v1", ID: "raw-1", Data: []byte("plain")}); err != nil {
		t.Fatal(err)
	}
	sync10s(t, ix)
	recs, err := ix.Query(ctx, Query{Type: "big.v1"})
	if err != nil || len(recs) != 1 || len(recs[0].Payload) != 202 || recs[0].PayloadSize != 202 {
		t.Fatalf("big payload: %+v %v", recs, err)
	}
	stored, _ := s.Query(ctx, Query{Type: "big.v1"})
	if stored[0].Payload != nil {
		t.Fatal("a payload over the limit was stored")
	}
	recs, err = ix.Query(ctx, Query{Type: "raw.v1"})
	if err != nil || len(recs) != 1 || recs[0].ID != "raw-1" || !recs[0].DeadLetter || recs[0].Topic != topic+".dlq" || string(recs[0].Payload) != "plain" {
		t.Fatalf("raw dead letter: %+v %v", recs, err)
	}

	// A topic deleted and created again is indexed from its start.
	if err := b.JetStream().DeleteStream(ctx, natsjs.StreamName(topic)); err != nil {
		t.Fatal(err)
	}
	// The broker caches the stream: a fresh one creates it again.
	b2 := brokerOn(t, srv)
	var msgs []*broker.Message
	for i := range 5 {
		e := event.New("svc", "again.v1", small(i))
		h := map[string]string{}
		event.NATS.Encode(e, h)
		msgs = append(msgs, &broker.Message{Topic: topic, Route: "again.v1", ID: e.ID, Header: h, Data: e.Data})
	}
	if err := b2.Publish(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	sync10s(t, ix)
	recs, err = ix.Query(ctx, Query{Type: "again.v1"})
	if err != nil || len(recs) != 5 || recs[0].Seq != 1 || recs[4].Seq != 5 {
		t.Fatalf("recreated topic: %d records %v", len(recs), err)
	}
	if n, err := ix.Behind(ctx); err != nil || n != 0 {
		t.Fatalf("behind %d %v", n, err)
	}
	if len(seqs()) != 800 {
		t.Fatal("records of the deleted topic's first incarnation went missing")
	}
}

func TestIndexerOptions(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	s := sqliteStore(t)
	for name, opt := range map[string]Option{
		"batch":    WithBatch(0, time.Second),
		"flush":    WithBatch(10, 0),
		"poll":     WithPollInterval(0),
		"payload":  WithMaxPayload(-1),
		"no store": nil,
	} {
		t.Run(name, func(t *testing.T) {
			var err error
			if opt == nil {
				_, err = NewIndexer(b.JetStream(), nil)
			} else {
				_, err = NewIndexer(b.JetStream(), s, opt)
			}
			if err == nil {
				t.Fatal("accepted")
			}
		})
	}
	ix, _ := runIndexer(t, b, s)
	// Run may be called once.
	eventually(t, func() bool { return ix.running.Load() })
	if err := ix.Run(t.Context()); err == nil {
		t.Fatal("second Run accepted")
	}
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestIndexerPacesWhileBusy checks WithBusyRate: while events keep
// arriving the indexer indexes at most the busy rate; once they stop it
// catches up at full speed.
func TestIndexerPacesWhileBusy(t *testing.T) {
	t.Parallel()
	srv := ownServer(t)
	b := brokerOn(t, srv)
	ctx := t.Context()
	const busyRate = 400
	if err := b.EnsureTopic(ctx, "busy", broker.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	ix, _ := runIndexer(t, b, sqliteStore(t), WithBusyRate(busyRate), WithBatch(50, 20*time.Millisecond))
	sync10s(t, ix)
	start := time.Now()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	published := 0
	for time.Since(start) < 1500*time.Millisecond {
		msgs := make([]*broker.Message, 100)
		for i := range msgs {
			msgs[i] = &broker.Message{Topic: "busy", Route: "t.v1", Data: []byte("{}")}
		}
		if err := b.Publish(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
		published += len(msgs)
		<-tick.C
	}
	// Read the count before the clock: time spent between the two counts
	// for the limit, not against it.
	indexed := ix.Indexed()
	elapsed := time.Since(start)
	// The limiter's burst is a tenth of a second's worth, the first
	// publish (100) is read before the topic is seen growing, and batches
	// are written every 20ms (50; one may be written as the count is
	// read, one more just before).
	if limit := uint64(busyRate*elapsed.Seconds()) + busyRate/10 + 100 + 2*50; indexed > limit {
		t.Fatalf("indexed %d of %d events in %v while they kept arriving; the busy rate allows %d", indexed, published, elapsed, limit)
	}
	if indexed == 0 {
		t.Fatal("nothing indexed while events arrived")
	}
	start = time.Now()
	sync10s(t, ix)
	t.Logf("%d of %d indexed while busy (%v); the rest caught up in %v", indexed, published, elapsed.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
