package natsjs_test

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/heraldhq/herald/broker/natsjs"
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
