package natsjs_test

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/eventstore"
	esnats "github.com/heraldhq/herald/eventstore/natsjs"
	"github.com/heraldhq/herald/eventstore/storetest"
	"github.com/heraldhq/herald/internal/testenv"
)

var emb *natsjs.Embedded

func TestMain(m *testing.M) {
	testenv.MainWithNATS(m, natsjs.EmbeddedConfig{}, func(e *natsjs.Embedded) { emb = e })
}

// newStore returns a store on a JetStream stream of its own, removed when
// the test ends.
func newStore(t testing.TB, opts ...esnats.Option) *esnats.Store {
	t.Helper()
	nc, err := emb.Connect()
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	id := strings.ToLower(rand.Text())[:12]
	opts = append([]esnats.Option{esnats.WithStream("ES_" + id), esnats.WithPrefix("es." + id)}, opts...)
	s, err := esnats.New(t.Context(), nc, opts...)
	if err != nil {
		t.Fatalf("new store: %v", err)
	}
	t.Cleanup(func() {
		if err := nc.Flush(); err != nil {
			t.Errorf("flush: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) eventstore.Store { return newStore(t) })
}

func TestNewChecks(t *testing.T) {
	nc, err := emb.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for name, opt := range map[string]esnats.Option{
		"stream name with a dot": esnats.WithStream("A.B"),
		"prefix with wildcard":   esnats.WithPrefix("es.*"),
		"no replicas":            esnats.WithReplicas(0),
		"zero window":            esnats.WithDuplicateWindow(0),
	} {
		if _, err := esnats.New(t.Context(), nc, opt); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := esnats.New(t.Context(), nil); err == nil {
		t.Error("nil connection accepted")
	}
}

// TestBatchesAtomic has stores on separate connections race batches of
// ten onto one stream: every batch must land whole and contiguous, or not
// at all.
func TestBatchesAtomic(t *testing.T) {
	base := newStore(t)
	const writers, rounds, size = 4, 10, 10
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for w := range writers {
		nc, err := emb.Connect()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		s, err := esnats.New(t.Context(), nc, esnats.WithStream(base.Stream()), esnats.WithPrefix(base.Prefix()))
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				evs := storetest.Events(fmt.Sprintf("w%d.v1", w), size)
				if _, err := s.Append(t.Context(), "batch-1", eventstore.Any, evs...); err != nil {
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
	recs, err := eventstore.Collect(base.Load(t.Context(), "batch-1", 0))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != writers*rounds*size {
		t.Fatalf("%d events stored, want %d", len(recs), writers*rounds*size)
	}
	for i := 0; i < len(recs); i += size {
		for j := i; j < i+size; j++ {
			r := recs[j]
			if r.Version != uint64(j+1) || r.Event.Type != recs[i].Event.Type || r.Position != recs[i].Position+uint64(j-i) {
				t.Fatalf("version %d (position %d, type %s) breaks the batch starting at version %d (position %d, type %s)",
					r.Version, r.Position, r.Event.Type, recs[i].Version, recs[i].Position, recs[i].Event.Type)
			}
		}
	}
}

func TestAppendTooLarge(t *testing.T) {
	s := newStore(t)
	_, err := s.Append(t.Context(), "big-1", eventstore.Any, storetest.Events("t.v1", esnats.MaxBatch+1)...)
	if !errors.Is(err, eventstore.ErrInvalid) {
		t.Errorf("append of %d events: %v, want ErrInvalid", esnats.MaxBatch+1, err)
	}
}

func TestOpen(t *testing.T) {
	s := newStore(t)
	if _, err := s.Append(t.Context(), "open-1", eventstore.NoStream, storetest.Events("t.v1", 3)...); err != nil {
		t.Fatal(err)
	}
	nc, err := emb.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	o, err := esnats.Open(t.Context(), nc, esnats.WithStream(s.Stream()), esnats.WithPrefix(s.Prefix()))
	if err != nil {
		t.Fatal(err)
	}
	recs, err := eventstore.Collect(o.Load(t.Context(), "open-1", 0))
	if err != nil || len(recs) != 3 {
		t.Fatalf("load through an opened store: %d events, %v; want 3", len(recs), err)
	}
	head, err := o.LastPosition(t.Context())
	if err != nil || head != recs[2].Position {
		t.Fatalf("last position %d, %v; want %d", head, err, recs[2].Position)
	}
	// A tombstone marker is the newest message on an event subject.
	if err := o.Tombstone(t.Context(), "open-1"); err != nil {
		t.Fatal(err)
	}
	if head2, err := o.LastPosition(t.Context()); err != nil || head2 <= head {
		t.Fatalf("last position after a tombstone %d, %v; want past %d", head2, err, head)
	}
	if _, err := esnats.Open(t.Context(), nc, esnats.WithStream("ES_MISSING_"+strings.ToUpper(rand.Text()[:8]))); !errors.Is(err, eventstore.ErrNotFound) {
		t.Fatalf("open of a missing stream: %v, want ErrNotFound", err)
	}
}

// TestLoadStopsEarly stops a Load after its first event: the fetch under
// it must not outlive it (TestMain checks for leaked goroutines).
func TestLoadStopsEarly(t *testing.T) {
	s := newStore(t)
	if _, err := s.Append(t.Context(), "early-1", eventstore.NoStream, storetest.Events("t.v1", 20)...); err != nil {
		t.Fatal(err)
	}
	for r, err := range s.Load(t.Context(), "early-1", 0) {
		if err != nil || r.Version != 1 {
			t.Fatalf("first event: %+v, %v", r, err)
		}
		break
	}
	for r, err := range s.ReadAll(t.Context(), 0) {
		if err != nil || r.Version != 1 {
			t.Fatalf("first event of read all: %+v, %v", r, err)
		}
		break
	}
}

// TestReadsSpanBatches reads streams longer than one fetch returns,
// interleaved with another stream and with metadata messages (the last
// message of the JetStream stream is one): Load and ReadAll return every
// event once, in order.
func TestReadsSpanBatches(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	for range 5 {
		for _, stream := range []string{"long-a", "long-b"} {
			if _, err := s.Append(ctx, stream, eventstore.Any, storetest.Events("t.v1", 500)...); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.SetMetadata(ctx, "long-b", eventstore.Metadata{MaxCount: 10000}); err != nil {
			t.Fatal(err)
		}
	}
	for _, after := range []uint64{0, 999, 2499} {
		want := after + 1
		for r, err := range s.Load(ctx, "long-a", after) {
			if err != nil {
				t.Fatal(err)
			}
			if r.Version != want {
				t.Fatalf("load after %d: version %d, want %d", after, r.Version, want)
			}
			want++
		}
		if want != 2501 {
			t.Fatalf("load after %d ended before version %d", after, want)
		}
	}
	var last uint64
	n := map[string]int{}
	for r, err := range s.ReadAll(ctx, 0) {
		if err != nil {
			t.Fatal(err)
		}
		if r.Position <= last {
			t.Fatalf("read all: position %d after %d", r.Position, last)
		}
		last = r.Position
		n[r.Stream]++
	}
	if n["long-a"] != 2500 || n["long-b"] != 2500 || len(n) != 2 {
		t.Fatalf("read all: %v, want 2500 events of each stream", n)
	}
}

// TestAppendLargerThanAMessage appends events that do not fit one
// message together: they go as an atomic batch, one message each, and
// read back like a packed append.
func TestAppendLargerThanAMessage(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	mustAppend(t, s, "large-1", eventstore.NoStream, storetest.Events("t.v1", 3)...)
	evs := storetest.Events("t.v1", 300)
	for _, e := range evs {
		e.Data = []byte(`"` + strings.Repeat("x", 4096) + `"`)
	}
	res := mustAppend(t, s, "large-1", eventstore.Exact(3), evs...)
	if res.Version != 303 || res.Written != 300 {
		t.Fatalf("append of 300 events of 4 KiB = %+v, want version 303", res)
	}
	if _, err := s.Append(ctx, "large-1", eventstore.Exact(3), storetest.Events("t.v1", 2)...); !errors.Is(err, eventstore.ErrConflict) {
		t.Fatalf("append at a stale version after the batch: %v, want ErrConflict", err)
	}
	res = mustAppend(t, s, "large-1", eventstore.Exact(303), storetest.Events("t.v1", 2)...)
	recs, err := eventstore.Collect(s.Load(ctx, "large-1", 0))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 305 {
		t.Fatalf("%d events loaded, want 305", len(recs))
	}
	for i, r := range recs {
		if r.Version != uint64(i+1) || i > 0 && r.Position <= recs[i-1].Position {
			t.Fatalf("event %d: version %d position %d after position %d", i, r.Version, r.Position, recs[max(i-1, 0)].Position)
		}
		if i >= 3 && i < 303 && (r.Event.ID != evs[i-3].ID || len(r.Event.Data) != 4098) {
			t.Fatalf("event %d: id %s with %d bytes, want %s with 4098", i, r.Event.ID, len(r.Event.Data), evs[i-3].ID)
		}
	}
	if res.Position != recs[304].Position {
		t.Errorf("append result position %d, last event at %d", res.Position, recs[304].Position)
	}
}

// TestPackedRetryFindsStoredEvents retries an Any append whose first event
// was stored, together with a new one, after another append: JetStream
// recognises the first event's id and the store writes only the new one.
func TestPackedRetryFindsStoredEvents(t *testing.T) {
	s := newStore(t)
	first := storetest.Events("t.v1", 3)
	mustAppend(t, s, "retry-1", eventstore.Any, first...)
	mustAppend(t, s, "retry-1", eventstore.Any, storetest.Events("t.v1", 1)...)
	extra := storetest.Events("t.v1", 1)[0]
	res := mustAppend(t, s, "retry-1", eventstore.Any, first[0], extra)
	if res.Written != 1 || res.Version != 5 {
		t.Fatalf("retry = %+v, want 1 written at version 5", res)
	}
	recs, err := eventstore.Collect(s.Load(t.Context(), "retry-1", 0))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 5 || recs[4].Event.ID != extra.ID {
		t.Fatalf("%d events, the last %s; want 5, the last %s", len(recs), recs[len(recs)-1].Event.ID, extra.ID)
	}
}

// TestReadAllFromInsideAnAppend resumes ReadAll from the position of an
// event in the middle of a multi-event append.
func TestReadAllFromInsideAnAppend(t *testing.T) {
	s := newStore(t)
	mustAppend(t, s, "mid-1", eventstore.NoStream, storetest.Events("t.v1", 5)...)
	mustAppend(t, s, "mid-2", eventstore.NoStream, storetest.Events("t.v1", 1)...)
	all, err := eventstore.Collect(s.ReadAll(t.Context(), 0))
	if err != nil || len(all) != 6 {
		t.Fatalf("read all: %d events, %v; want 6", len(all), err)
	}
	rest, err := eventstore.Collect(s.ReadAll(t.Context(), all[1].Position))
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != 4 || rest[0].Position != all[2].Position || rest[3].Stream != "mid-2" {
		t.Fatalf("read all after %d: %d events from %d, want the 4 from %d", all[1].Position, len(rest), rest[0].Position, all[2].Position)
	}
	last, err := s.LastPosition(t.Context())
	if err != nil || last != all[5].Position {
		t.Fatalf("last position %d, %v; want %d", last, err, all[5].Position)
	}
}

// TestMalformedPackedMessage reads a stream whose message claims to hold
// packed events and does not: a clear error, no panic.
func TestMalformedPackedMessage(t *testing.T) {
	s := newStore(t)
	nc, err := emb.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(s.Prefix() + ".e.bad-1")
	m.Header.Set("Herald-Events", "2")
	m.Header.Set("Herald-Version", "2")
	m.Data = []byte{1, 5, 0xff}
	if _, err := js.PublishMsg(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	_, err = eventstore.Collect(s.Load(t.Context(), "bad-1", 0))
	if err == nil || !strings.Contains(err.Error(), "do not decode") {
		t.Fatalf("load of a malformed message: %v, want an error saying the events do not decode", err)
	}
}

func mustAppend(t *testing.T, s eventstore.Store, stream string, exp eventstore.Expected, evs ...*event.Event) eventstore.AppendResult {
	t.Helper()
	res, err := s.Append(t.Context(), stream, exp, evs...)
	if err != nil {
		t.Fatalf("append to %s: %v", stream, err)
	}
	return res
}
