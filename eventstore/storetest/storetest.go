// Package storetest is the conformance suite of eventstore.Store. Every
// store runs it with one call:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) eventstore.Store { return newStore(t) })
//	}
//
// The suite waits with deadlines sized for a loaded machine and never
// sleeps to wait for a condition.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/eventstore"
)

// NewStore returns an empty store, of its own, for one test. Whatever it
// opens it closes with t.Cleanup.
type NewStore func(t *testing.T) eventstore.Store

const waitFor = 20 * time.Second

// Run runs the suite against stores made by newStore.
func Run(t *testing.T, newStore NewStore) {
	tests := []struct {
		name string
		fn   func(*testing.T, eventstore.Store)
	}{
		{"AppendLoad", testAppendLoad},
		{"LoadAfter", testLoadAfter},
		{"ExpectedVersion", testExpectedVersion},
		{"ConcurrentWriters", testConcurrentWriters},
		{"Idempotent", testIdempotent},
		{"Atomic", testAtomic},
		{"BadInput", testBadInput},
		{"ReadAll", testReadAll},
		{"Subscribe", testSubscribe},
		{"Last", testLast},
		{"MaxCount", testMaxCount},
		{"MaxAge", testMaxAge},
		{"SoftDelete", testSoftDelete},
		{"Tombstone", testTombstone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

// Events returns n valid events of type typ, with data "<typ>-<i>".
func Events(typ string, n int) []*event.Event {
	out := make([]*event.Event, n)
	for i := range out {
		e := event.New("storetest", typ, fmt.Appendf(nil, `{"n":%d}`, i))
		e.DataContentType = "application/json"
		out[i] = e
	}
	return out
}

func load(t *testing.T, s eventstore.Store, stream string, after uint64) []*eventstore.Record {
	t.Helper()
	recs, err := eventstore.Collect(s.Load(t.Context(), stream, after))
	if err != nil {
		t.Fatalf("load %q after %d: %v", stream, after, err)
	}
	return recs
}

func mustAppend(t *testing.T, s eventstore.Store, stream string, exp eventstore.Expected, evs ...*event.Event) eventstore.AppendResult {
	t.Helper()
	res, err := s.Append(t.Context(), stream, exp, evs...)
	if err != nil {
		t.Fatalf("append %d events to %q expecting %v: %v", len(evs), stream, exp, err)
	}
	return res
}

func versions(recs []*eventstore.Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Version
	}
	return out
}

func testAppendLoad(t *testing.T, s eventstore.Store) {
	e := event.New("orders", "shop.order.placed.v1", []byte(`{"total":42}`))
	e.DataContentType = "application/json"
	e.DataSchema = "registry:orders-value/1"
	e.CorrelationID = "corr-1"
	e.CausationID = "cmd-1"
	e.TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	e.Extensions = map[string]string{"tenant": "acme"}
	more := Events("shop.order.shipped.v1", 2)
	more[1].Subject = "custom-subject"
	res := mustAppend(t, s, "order-1", eventstore.NoStream, append([]*event.Event{e}, more...)...)
	if res.Version != 3 || res.Written != 3 || res.Position == 0 {
		t.Fatalf("append result = %+v, want version 3, 3 written, a position", res)
	}
	if e.Sequence != 0 || e.Subject != "" {
		t.Errorf("Append modified the caller's event: sequence %d subject %q", e.Sequence, e.Subject)
	}
	recs := load(t, s, "order-1", 0)
	if got := versions(recs); fmt.Sprint(got) != "[1 2 3]" {
		t.Fatalf("versions = %v, want [1 2 3]", got)
	}
	got := recs[0].Event
	if got.ID != e.ID || got.Type != e.Type || got.Source != e.Source || string(got.Data) != string(e.Data) ||
		got.DataContentType != e.DataContentType || got.DataSchema != e.DataSchema ||
		got.CorrelationID != "corr-1" || got.CausationID != "cmd-1" || got.TraceParent != e.TraceParent ||
		got.Extensions["tenant"] != "acme" || !got.Time.Equal(e.Time) {
		t.Errorf("loaded event = %+v, want the appended %+v", got, e)
	}
	if got.Subject != "order-1" || got.Sequence != 1 {
		t.Errorf("subject %q sequence %d, want the stream name and 1", got.Subject, got.Sequence)
	}
	if recs[2].Event.Subject != "custom-subject" {
		t.Errorf("subject %q, want the one set", recs[2].Event.Subject)
	}
	var lastPos uint64
	for _, r := range recs {
		if r.Stream != "order-1" || r.Event.Sequence != r.Version || r.Recorded.IsZero() {
			t.Errorf("record %+v: want stream order-1, Sequence = Version, Recorded set", r)
		}
		if r.Position <= lastPos {
			t.Errorf("position %d after %d, want increasing", r.Position, lastPos)
		}
		lastPos = r.Position
	}
	if lastPos != res.Position {
		t.Errorf("last position %d, append said %d", lastPos, res.Position)
	}
	info, err := s.Info(t.Context(), "order-1")
	if err != nil || info.Version != 3 {
		t.Errorf("info = %+v, %v; want version 3", info, err)
	}
	if info, err := s.Info(t.Context(), "order-none"); err != nil || info.Version != 0 {
		t.Errorf("info of a missing stream = %+v, %v; want version 0, no error", info, err)
	}
	if recs := load(t, s, "order-none", 0); len(recs) != 0 {
		t.Errorf("load of a missing stream yielded %d records", len(recs))
	}
}

func testLoadAfter(t *testing.T, s eventstore.Store) {
	mustAppend(t, s, "acc-1", eventstore.Any, Events("t.v1", 5)...)
	mustAppend(t, s, "acc-2", eventstore.Any, Events("t.v1", 2)...)
	for _, tc := range []struct {
		after uint64
		want  string
	}{{0, "[1 2 3 4 5]"}, {2, "[3 4 5]"}, {5, "[]"}, {9, "[]"}} {
		if got := fmt.Sprint(versions(load(t, s, "acc-1", tc.after))); got != tc.want {
			t.Errorf("load after %d = %s, want %s", tc.after, got, tc.want)
		}
	}
	// Stopping early ends the iteration cleanly.
	n := 0
	for _, err := range s.Load(t.Context(), "acc-1", 0) {
		if err != nil {
			t.Fatal(err)
		}
		n++
		if n == 2 {
			break
		}
	}
}

func testExpectedVersion(t *testing.T, s eventstore.Store) {
	mustAppend(t, s, "exp-1", eventstore.Any, Events("t.v1", 2)...)
	cases := []struct {
		name     string
		stream   string
		expected eventstore.Expected
		actual   uint64
		ok       bool
	}{
		{"any on existing", "exp-1", eventstore.Any, 2, true},
		{"no stream on existing", "exp-1", eventstore.NoStream, 3, false},
		{"stream exists on existing", "exp-1", eventstore.StreamExists, 3, true},
		{"exact right", "exp-1", eventstore.Exact(4), 4, true},
		{"exact stale", "exp-1", eventstore.Exact(2), 5, false},
		{"exact ahead", "exp-1", eventstore.Exact(9), 5, false},
		{"stream exists on missing", "exp-2", eventstore.StreamExists, 0, false},
		{"exact on missing", "exp-3", eventstore.Exact(1), 0, false},
		{"exact zero on missing", "exp-4", eventstore.Exact(0), 0, true},
		{"no stream on missing", "exp-5", eventstore.NoStream, 0, true},
	}
	for _, tc := range cases {
		_, err := s.Append(t.Context(), tc.stream, tc.expected, Events("t.v1", 1)...)
		if tc.ok {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		var ce *eventstore.ConflictError
		if !errors.Is(err, eventstore.ErrConflict) || !errors.As(err, &ce) {
			t.Errorf("%s: err = %v, want a *ConflictError", tc.name, err)
			continue
		}
		if ce.Actual != tc.actual || ce.Expected != tc.expected || ce.Stream != tc.stream {
			t.Errorf("%s: conflict %+v, want stream %q expected %v actual %d", tc.name, ce, tc.stream, tc.expected, tc.actual)
		}
		if msg := err.Error(); !strings.Contains(msg, tc.expected.String()) || !strings.Contains(msg, fmt.Sprintf("actual %d", tc.actual)) {
			t.Errorf("%s: message %q does not name expected %v and actual %d", tc.name, msg, tc.expected, tc.actual)
		}
	}
	if got := fmt.Sprint(versions(load(t, s, "exp-1", 0))); got != "[1 2 3 4 5]" {
		t.Errorf("versions after the cases = %s, want [1 2 3 4 5]", got)
	}
}

// testConcurrentWriters has 8 writers race for each version of one
// stream: exactly one wins each, the others get ErrConflict.
func testConcurrentWriters(t *testing.T, s eventstore.Store) {
	const writers, target = 8, 40
	var (
		mu      sync.Mutex
		winners = map[uint64]string{} // version -> event id
		wins    atomic.Int64
		losses  atomic.Int64
		wg      sync.WaitGroup
	)
	errc := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				info, err := s.Info(t.Context(), "race-1")
				if err != nil {
					errc <- err
					return
				}
				if info.Version >= target {
					return
				}
				e := Events(fmt.Sprintf("race.w%d.v1", w), 1)[0]
				res, err := s.Append(t.Context(), "race-1", eventstore.Exact(info.Version), e)
				switch {
				case err == nil:
					wins.Add(1)
					mu.Lock()
					if prev, ok := winners[res.Version]; ok {
						errc <- fmt.Errorf("version %d won twice: %s and %s", res.Version, prev, e.ID)
					}
					winners[res.Version] = e.ID
					mu.Unlock()
					if res.Version != info.Version+1 {
						errc <- fmt.Errorf("append expecting %d produced version %d", info.Version, res.Version)
					}
				case errors.Is(err, eventstore.ErrConflict):
					losses.Add(1)
				default:
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	recs := load(t, s, "race-1", 0)
	if len(recs) != target || int(wins.Load()) != target {
		t.Fatalf("%d events stored, %d appends won; want %d of each", len(recs), wins.Load(), target)
	}
	for i, r := range recs {
		if r.Version != uint64(i+1) || winners[r.Version] != r.Event.ID {
			t.Errorf("version %d holds %s, the winner was %s", r.Version, r.Event.ID, winners[r.Version])
		}
	}
	t.Logf("%d writers: %d wins, %d conflicts", writers, wins.Load(), losses.Load())
}

func testIdempotent(t *testing.T, s eventstore.Store) {
	evs := Events("t.v1", 3)
	first := mustAppend(t, s, "idem-1", eventstore.NoStream, evs...)
	// The same append again, expecting what the first one expected.
	again, err := s.Append(t.Context(), "idem-1", eventstore.NoStream, evs...)
	if err != nil {
		t.Fatalf("retried append: %v", err)
	}
	if again.Written != 0 || again.Version != first.Version {
		t.Errorf("retry = %+v, want nothing written at version %d", again, first.Version)
	}
	// Any, with one new event among the old ones.
	extra := Events("t.v1", 1)[0]
	res := mustAppend(t, s, "idem-1", eventstore.Any, evs[1], extra)
	if res.Written != 1 || res.Version != 4 {
		t.Errorf("mixed append = %+v, want 1 written, version 4", res)
	}
	recs := load(t, s, "idem-1", 0)
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.Event.ID
	}
	want := []string{evs[0].ID, evs[1].ID, evs[2].ID, extra.ID}
	if fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Errorf("ids = %v, want %v", ids, want)
	}
	// The same id in another stream is another event.
	if res := mustAppend(t, s, "idem-2", eventstore.NoStream, evs[0]); res.Written != 1 {
		t.Errorf("same id in another stream: %+v, want it written", res)
	}
}

func testAtomic(t *testing.T, s eventstore.Store) {
	mustAppend(t, s, "atom-1", eventstore.NoStream, Events("t.v1", 1)...)
	evs := Events("t.v1", 5)
	if _, err := s.Append(t.Context(), "atom-1", eventstore.Exact(0), evs...); !errors.Is(err, eventstore.ErrConflict) {
		t.Fatalf("append with a stale version: %v, want ErrConflict", err)
	}
	bad := Events("t.v1", 5)
	bad[3].Type = ""
	if _, err := s.Append(t.Context(), "atom-1", eventstore.Any, bad...); !errors.Is(err, eventstore.ErrInvalid) {
		t.Fatalf("append with an event without type: %v, want ErrInvalid", err)
	}
	if recs := load(t, s, "atom-1", 0); len(recs) != 1 {
		t.Errorf("%d events stored after two failed appends, want 1", len(recs))
	}
	res := mustAppend(t, s, "atom-1", eventstore.Exact(1), Events("t.v1", 50)...)
	if res.Version != 51 || res.Written != 50 {
		t.Errorf("append of 50 = %+v, want version 51", res)
	}
}

func testBadInput(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	noType := Events("t.v1", 1)[0]
	noType.Type = ""
	noID := Events("t.v1", 1)[0]
	noID.ID = ""
	dup := Events("t.v1", 1)[0]
	cases := []struct {
		name     string
		stream   string
		expected eventstore.Expected
		events   []*event.Event
	}{
		{"empty stream name", "", eventstore.Any, Events("t.v1", 1)},
		{"stream name with space", "order 1", eventstore.Any, Events("t.v1", 1)},
		{"stream name with wildcard", "order.*", eventstore.Any, Events("t.v1", 1)},
		{"stream name with empty token", "order..1", eventstore.Any, Events("t.v1", 1)},
		{"stream name too long", strings.Repeat("a", eventstore.MaxStreamLen+1), eventstore.Any, Events("t.v1", 1)},
		{"unknown expected mode", "bad-1", eventstore.Expected{}, Events("t.v1", 1)},
		{"event without type", "bad-1", eventstore.Any, []*event.Event{noType}},
		{"event without id", "bad-1", eventstore.Any, []*event.Event{noID}},
		{"nil event", "bad-1", eventstore.Any, []*event.Event{nil}},
		{"same id twice", "bad-1", eventstore.Any, []*event.Event{dup, dup}},
	}
	for _, tc := range cases {
		_, err := s.Append(ctx, tc.stream, tc.expected, tc.events...)
		if !errors.Is(err, eventstore.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", tc.name, err)
		}
	}
	if recs := load(t, s, "bad-1", 0); len(recs) != 0 {
		t.Errorf("%d events stored by rejected appends", len(recs))
	}
	if _, err := eventstore.Collect(s.Load(ctx, "no good", 0)); !errors.Is(err, eventstore.ErrInvalid) {
		t.Errorf("load of a bad name: %v, want ErrInvalid", err)
	}
	if _, err := s.Info(ctx, "no good"); !errors.Is(err, eventstore.ErrInvalid) {
		t.Errorf("info of a bad name: %v, want ErrInvalid", err)
	}
	if err := s.SetMetadata(ctx, "bad-2", eventstore.Metadata{MaxAge: -time.Second}); !errors.Is(err, eventstore.ErrInvalid) {
		t.Errorf("negative max age: %v, want ErrInvalid", err)
	}
}

func testReadAll(t *testing.T, s eventstore.Store) {
	streams := []string{"ra-a", "ra-b", "ra-c"}
	var want []string
	for round := range 4 {
		for _, st := range streams {
			evs := Events("t.v1", round+1)
			mustAppend(t, s, st, eventstore.Any, evs...)
			for _, e := range evs {
				want = append(want, e.ID)
			}
		}
	}
	all, err := eventstore.Collect(s.ReadAll(t.Context(), 0))
	if err != nil {
		t.Fatalf("read all: %v", err)
	}
	got := make([]string, len(all))
	var last uint64
	for i, r := range all {
		got[i] = r.Event.ID
		if r.Position <= last {
			t.Fatalf("position %d after %d", r.Position, last)
		}
		last = r.Position
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("read all gave %d events in another order than appended (%d)", len(got), len(want))
	}
	// Resume after the 7th.
	rest, err := eventstore.Collect(s.ReadAll(t.Context(), all[6].Position))
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != len(all)-7 || rest[0].Event.ID != all[7].Event.ID {
		t.Errorf("read after position %d gave %d events, want %d starting with the 8th", all[6].Position, len(rest), len(all)-7)
	}
	if tail, err := eventstore.Collect(s.ReadAll(t.Context(), last)); err != nil || len(tail) != 0 {
		t.Errorf("read after the last position: %d events, %v", len(tail), err)
	}
	if p, ok := s.(eventstore.Positioner); ok {
		head, err := p.LastPosition(t.Context())
		if err != nil || head != last {
			t.Errorf("last position %d, %v; want %d, the position of the last event read", head, err, last)
		}
	}
}

func testSubscribe(t *testing.T, s eventstore.Store) {
	before := Events("t.v1", 5)
	mustAppend(t, s, "sub-1", eventstore.Any, before...)
	first := mustAppend(t, s, "sub-0", eventstore.Any, Events("t.v1", 1)...)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var (
		mu     sync.Mutex
		got    []string
		caught = make(chan uint64, 1)
		done   = make(chan error, 1)
	)
	// Start after the first event of sub-1: four of it, then sub-0's.
	all, err := eventstore.Collect(s.ReadAll(t.Context(), 0))
	if err != nil || len(all) != 6 {
		t.Fatalf("read all: %d, %v", len(all), err)
	}
	go func() {
		done <- eventstore.Subscribe(ctx, s, all[0].Position, func(_ context.Context, r *eventstore.Record) error {
			mu.Lock()
			got = append(got, r.Event.ID)
			mu.Unlock()
			return nil
		}, eventstore.WithCaughtUp(func(p uint64) { caught <- p }), eventstore.WithPollInterval(10*time.Millisecond))
	}()
	select {
	case p := <-caught:
		if p != first.Position {
			t.Errorf("caught up at position %d, want %d", p, first.Position)
		}
	case err := <-done:
		t.Fatalf("subscribe returned before catching up: %v", err)
	case <-time.After(waitFor):
		t.Fatal("subscription did not catch up")
	}
	mu.Lock()
	if len(got) != 5 || got[0] != before[1].ID {
		t.Errorf("caught up with %d events, want 5 starting with the second", len(got))
	}
	mu.Unlock()
	live := Events("t.v1", 3)
	mustAppend(t, s, "sub-2", eventstore.Any, live...)
	deadline := time.Now().Add(waitFor)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 8 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscription got %d of 8 events", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("subscribe: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 8 || got[5] != live[0].ID || got[7] != live[2].ID {
		t.Errorf("got %d events, want 8 ending with the live ones in order", len(got))
	}
	// A failing handler stops the subscription with its error.
	boom := errors.New("boom")
	err = eventstore.Subscribe(t.Context(), s, 0, func(context.Context, *eventstore.Record) error { return boom })
	if !errors.Is(err, boom) {
		t.Errorf("subscribe with a failing handler: %v, want its error", err)
	}
}

func testLast(t *testing.T, s eventstore.Store) {
	if p, ok := s.(eventstore.Positioner); ok {
		if head, err := p.LastPosition(t.Context()); err != nil || head != 0 {
			t.Errorf("last position of an empty store: %d, %v; want 0", head, err)
		}
	}
	if _, err := s.Last(t.Context(), "last-1"); !errors.Is(err, eventstore.ErrNotFound) {
		t.Errorf("last of a missing stream: %v, want ErrNotFound", err)
	}
	evs := Events("t.v1", 3)
	mustAppend(t, s, "last-1", eventstore.Any, evs...)
	mustAppend(t, s, "last-2", eventstore.Any, Events("t.v1", 1)...)
	r, err := s.Last(t.Context(), "last-1")
	if err != nil || r.Event.ID != evs[2].ID || r.Version != 3 {
		t.Errorf("last = %+v, %v; want the third event", r, err)
	}
}

func testMaxCount(t *testing.T, s eventstore.Store) {
	mustAppend(t, s, "mc-1", eventstore.Any, Events("t.v1", 5)...)
	if err := s.SetMetadata(t.Context(), "mc-1", eventstore.Metadata{MaxCount: 2}); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(versions(load(t, s, "mc-1", 0))); got != "[4 5]" {
		t.Errorf("versions with max count 2 = %s, want [4 5]", got)
	}
	mustAppend(t, s, "mc-1", eventstore.Exact(5), Events("t.v1", 1)...)
	if got := fmt.Sprint(versions(load(t, s, "mc-1", 0))); got != "[5 6]" {
		t.Errorf("versions after one more = %s, want [5 6]", got)
	}
	info, err := s.Info(t.Context(), "mc-1")
	if err != nil || info.Metadata.MaxCount != 2 || info.Version != 6 {
		t.Errorf("info = %+v, %v", info, err)
	}
	all, err := eventstore.Collect(s.ReadAll(t.Context(), 0))
	if err != nil || len(all) != 6 {
		t.Errorf("read all saw %d events (%v), want all 6", len(all), err)
	}
}

func testMaxAge(t *testing.T, s eventstore.Store) {
	mustAppend(t, s, "age-1", eventstore.Any, Events("t.v1", 3)...)
	if err := s.SetMetadata(t.Context(), "age-1", eventstore.Metadata{MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if n := len(load(t, s, "age-1", 0)); n != 3 {
		t.Errorf("%d events visible with max age 1h, want 3", n)
	}
	if err := s.SetMetadata(t.Context(), "age-1", eventstore.Metadata{MaxAge: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitFor)
	for len(load(t, s, "age-1", 0)) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("events older than the max age of 1ms stayed visible")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testSoftDelete(t *testing.T, s eventstore.Store) {
	mustAppend(t, s, "del-1", eventstore.Any, Events("t.v1", 3)...)
	if err := s.Delete(t.Context(), "del-1"); err != nil {
		t.Fatal(err)
	}
	if n := len(load(t, s, "del-1", 0)); n != 0 {
		t.Errorf("%d events visible after delete", n)
	}
	if _, err := s.Last(t.Context(), "del-1"); !errors.Is(err, eventstore.ErrNotFound) {
		t.Errorf("last after delete: %v, want ErrNotFound", err)
	}
	res := mustAppend(t, s, "del-1", eventstore.Exact(3), Events("t.v1", 1)...)
	if res.Version != 4 {
		t.Errorf("append after delete: version %d, want 4", res.Version)
	}
	if got := fmt.Sprint(versions(load(t, s, "del-1", 0))); got != "[4]" {
		t.Errorf("versions after revival = %s, want [4]", got)
	}
}

func testTombstone(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	mustAppend(t, s, "tomb-1", eventstore.Any, Events("t.v1", 2)...)
	if err := s.Tombstone(ctx, "tomb-1"); err != nil {
		t.Fatal(err)
	}
	for _, exp := range []eventstore.Expected{eventstore.Any, eventstore.Exact(2), eventstore.NoStream} {
		if _, err := s.Append(ctx, "tomb-1", exp, Events("t.v1", 1)...); !errors.Is(err, eventstore.ErrDeleted) {
			t.Errorf("append expecting %v to a tombstoned stream: %v, want ErrDeleted", exp, err)
		}
	}
	if _, err := eventstore.Collect(s.Load(ctx, "tomb-1", 0)); !errors.Is(err, eventstore.ErrDeleted) {
		t.Errorf("load of a tombstoned stream: %v, want ErrDeleted", err)
	}
	if err := s.SetMetadata(ctx, "tomb-1", eventstore.Metadata{}); !errors.Is(err, eventstore.ErrDeleted) {
		t.Errorf("set metadata of a tombstoned stream: %v, want ErrDeleted", err)
	}
	if _, err := s.Last(ctx, "tomb-1"); !errors.Is(err, eventstore.ErrDeleted) {
		t.Errorf("last of a tombstoned stream: %v, want ErrDeleted", err)
	}
	info, err := s.Info(ctx, "tomb-1")
	if err != nil || !info.Metadata.Tombstoned {
		t.Errorf("info = %+v, %v; want tombstoned", info, err)
	}
	all, err := eventstore.Collect(s.ReadAll(ctx, 0))
	if err != nil || len(all) < 2 {
		t.Errorf("read all after tombstone: %d events, %v; want the 2 still there", len(all), err)
	}
	if err := s.Tombstone(ctx, "tomb-2"); err != nil {
		t.Errorf("tombstone of a missing stream: %v", err)
	}
	if _, err := s.Append(ctx, "tomb-2", eventstore.NoStream, Events("t.v1", 1)...); !errors.Is(err, eventstore.ErrDeleted) {
		t.Errorf("append to a stream tombstoned before its first event: %v, want ErrDeleted", err)
	}
}
