package natsjs

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// fetched publishes n messages to a fresh stream, fetches them once
// (attempt 1) and, after their ack wait ran out, once more (attempt 2).
func fetched(t *testing.T, n int) (first, again []jetstream.Msg) {
	t.Helper()
	ctx := t.Context()
	e, err := RunEmbedded(ctx, EmbeddedConfig{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ADMIT", Subjects: []string{"admit.>"}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		if _, err := js.Publish(ctx, "admit.k", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	c, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "g", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(what string) []jetstream.Msg {
		var out []jetstream.Msg
		deadline := time.Now().Add(30 * time.Second)
		for len(out) < n && time.Now().Before(deadline) {
			b, err := c.Fetch(n-len(out), jetstream.FetchMaxWait(time.Second))
			if err != nil {
				t.Fatal(err)
			}
			for m := range b.Messages() {
				out = append(out, m)
			}
		}
		if len(out) != n {
			t.Fatalf("%s: fetched %d of %d messages", what, len(out), n)
		}
		return out
	}
	first = fetch("first deliveries")
	// The second fetch gets them only once their ack wait ran out.
	again = fetch("redeliveries")
	for _, m := range again {
		md, _ := m.Metadata()
		if md.NumDelivered != 2 {
			t.Fatalf("redelivery of %d has attempt %d", md.Sequence.Stream, md.NumDelivered)
		}
	}
	return first, again
}

func seqs(ds []*delivery) []uint64 {
	out := []uint64{}
	for _, d := range ds {
		out = append(out, d.Sequence())
	}
	return out
}

// flushed is what a's timer handed out when its wait ended.
type flushed struct {
	seqs    []uint64
	missing int
}

// flushOnWait makes a expect p and, when the wait ends, flush what it held
// into the returned channel.
func flushOnWait(a *admission, p pendingAtTake, wait time.Duration) <-chan flushed {
	got := make(chan flushed, 1)
	a.expectBack(p, wait, func(gen uint64) {
		ds, missing := a.flush(gen)
		got <- flushed{seqs(ds), missing}
	})
	return got
}

func awaitFlush(t *testing.T, got <-chan flushed) flushed {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	select {
	case f := <-got:
		return f
	case <-ctx.Done():
		t.Fatal("nothing handed out after the wait")
		return flushed{}
	}
}

func wrap(m jetstream.Msg, tr *tracker) *delivery {
	return newDelivery(m, nil, nil, false, tr, nil)
}

// A redelivery of a message the member still holds, or settled, is not
// handed out again; a redelivery of one it nacked is.
func TestAdmissionDropsStaleCopies(t *testing.T) {
	first, again := fetched(t, 3)
	var a admission
	tr := newTracker()
	var ds []*delivery
	for _, m := range first {
		out := a.admit(wrap(m, tr), tr)
		if len(out) != 1 {
			t.Fatalf("first delivery handed out %v", seqs(out))
		}
		ds = append(ds, out[0])
	}
	// 1 is settled (acknowledged), 2 still being handled, 3 nacked.
	ds[0].done()
	a.noteNack(ds[2].Sequence())
	ds[2].done()
	if out := a.admit(wrap(again[0], tr), tr); len(out) != 0 {
		t.Errorf("stale copy of a settled message handed out: %v", seqs(out))
	}
	if out := a.admit(wrap(again[1], tr), tr); len(out) != 0 {
		t.Errorf("stale copy of a held message handed out: %v", seqs(out))
	}
	if out := a.admit(wrap(again[2], tr), tr); len(out) != 1 || out[0].Sequence() != 3 {
		t.Errorf("retry of a nacked message: handed out %v, want [3]", seqs(out))
	}
	if tr.n != 2 {
		t.Errorf("tracking %d deliveries, want 2 (the held one and the retry)", tr.n)
	}
}

// What the previous owner gave back is handed out in stream order however
// the server redelivers it, and what arrives after it follows it.
func TestAdmissionSortsWhatWasGivenBack(t *testing.T) {
	_, again := fetched(t, 4)
	var a admission
	tr := newTracker()
	a.expectBack(pendingAtTake{back: []uint64{1, 2, 3}}, time.Minute, func(uint64) { t.Error("flushed by the timer") })
	for _, i := range []int{2, 0} {
		if out := a.admit(wrap(again[i], tr), tr); len(out) != 0 {
			t.Fatalf("handed out %v before all that was given back arrived", seqs(out))
		}
	}
	out := a.admit(wrap(again[1], tr), tr)
	if got := seqs(out); len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 3 {
		t.Fatalf("given back handed out as %v, want [1 2 3]", got)
	}
	if out := a.admit(wrap(again[3], tr), tr); len(out) != 1 || out[0].Sequence() != 4 {
		t.Fatalf("next delivery handed out as %v, want [4]", seqs(out))
	}
}

// A delivery that is not among those given back (one that went astray at
// the release and came due first) waits with them and takes its place in
// stream order.
func TestAdmissionHoldsWhatCameDueFirst(t *testing.T) {
	_, again := fetched(t, 4)
	var a admission
	tr := newTracker()
	a.expectBack(pendingAtTake{back: []uint64{1, 2, 3}}, time.Minute, func(uint64) { t.Error("flushed by the timer") })
	for _, i := range []int{3, 2, 0} {
		if out := a.admit(wrap(again[i], tr), tr); len(out) != 0 {
			t.Fatalf("handed out %v before all that was given back arrived", seqs(out))
		}
	}
	out := a.admit(wrap(again[1], tr), tr)
	if got := seqs(out); len(got) != 4 || got[0] != 1 || got[1] != 2 || got[2] != 3 || got[3] != 4 {
		t.Fatalf("handed out as %v, want [1 2 3 4]", got)
	}
}

// A delivery that was pending at the acquisition but not given back (it
// never reached the previous owner, and came due behind what was given
// back) is waited for too: it is counted, not named. A delivery newer than
// the acquisition waits with them; a second copy of a held one counts once.
func TestAdmissionWaitsForWhatElseWasPending(t *testing.T) {
	first, again := fetched(t, 4)
	var a admission
	tr := newTracker()
	a.expectBack(pendingAtTake{back: []uint64{2, 3}, others: 1, below: 3}, time.Minute, func(uint64) { t.Error("flushed by the timer") })
	for _, m := range []jetstream.Msg{again[1], again[2], first[3], again[3], first[1]} {
		if out := a.admit(wrap(m, tr), tr); len(out) != 0 {
			t.Fatalf("handed out %v before the delivery that was pending and not given back arrived", seqs(out))
		}
	}
	out := a.admit(wrap(again[0], tr), tr)
	if got := seqs(out); len(got) != 4 || got[0] != 1 || got[1] != 2 || got[2] != 3 || got[3] != 4 {
		t.Fatalf("handed out as %v, want [1 2 3 4]", got)
	}
	if tr.n != 4 {
		t.Errorf("tracking %d deliveries, want 4 (one per sequence)", tr.n)
	}
}

// The wait counts from the arrivals: an acquisition whose first
// deliveries come later than the wait (a loaded machine, a slow first
// pull) still holds them until all that was given back arrived.
func TestAdmissionWaitStartsAtTheFirstArrival(t *testing.T) {
	_, again := fetched(t, 2)
	var a admission
	tr := newTracker()
	const wait = 50 * time.Millisecond
	got := flushOnWait(&a, pendingAtTake{back: []uint64{1, 2}}, wait)
	time.Sleep(3 * wait) // longer than the wait passes before anything arrives
	if out := a.admit(wrap(again[1], tr), tr); len(out) != 0 {
		t.Fatalf("handed out %v although 1 was given back and has not arrived", seqs(out))
	}
	if f := awaitFlush(t, got); len(f.seqs) != 1 || f.seqs[0] != 2 {
		t.Fatalf("after the wait handed out %v, want [2]", f.seqs)
	}
}

// Holding ends after the wait when nothing more arrives: if some of what
// was given back never comes (another member settled it, or it was
// acknowledged at last), or after a crash when nothing new follows the
// redeliveries. What came is handed out sorted.
func TestAdmissionStopsWaiting(t *testing.T) {
	for name, tc := range map[string]struct {
		n       int
		p       pendingAtTake
		admit   []int // indexes of the redeliveries admitted
		want    []uint64
		missing int
	}{
		"given back":  {3, pendingAtTake{back: []uint64{1, 2, 3}}, []int{2, 0}, []uint64{1, 3}, 1},
		"after crash": {2, pendingAtTake{afterCrash: true}, []int{1, 0}, []uint64{1, 2}, 0},
	} {
		t.Run(name, func(t *testing.T) {
			_, again := fetched(t, tc.n)
			var a admission
			tr := newTracker()
			got := flushOnWait(&a, tc.p, 100*time.Millisecond)
			for _, i := range tc.admit {
				if out := a.admit(wrap(again[i], tr), tr); len(out) != 0 {
					t.Fatalf("handed out %v early", seqs(out))
				}
			}
			if f := awaitFlush(t, got); !slices.Equal(f.seqs, tc.want) || f.missing != tc.missing {
				t.Fatalf("after the wait handed out %v with %d missing, want %v and %d", f.seqs, f.missing, tc.want, tc.missing)
			}
		})
	}
}

// After a takeover from a member that crashed, the partition was reset:
// redeliveries that arrive before anything new went to another client
// after the reset and come due in no known order. They are held until the
// first first-time delivery and handed out sorted, with it.
func TestAdmissionSortsRedeliveriesAfterACrash(t *testing.T) {
	first, again := fetched(t, 5)
	var a admission
	tr := newTracker()
	a.expectBack(pendingAtTake{afterCrash: true}, time.Minute, func(uint64) { t.Error("flushed by the timer") })
	for _, i := range []int{2, 3, 0, 1} {
		if out := a.admit(wrap(again[i], tr), tr); len(out) != 0 {
			t.Fatalf("redelivery handed out as %v before anything new arrived", seqs(out))
		}
	}
	out := a.admit(wrap(first[4], tr), tr)
	if got := seqs(out); len(got) != 5 || got[0] != 1 || got[1] != 2 || got[2] != 3 || got[3] != 4 || got[4] != 5 {
		t.Fatalf("handed out as %v, want [1 2 3 4 5]", got)
	}
	if out := a.admit(wrap(again[4], tr), tr); len(out) != 0 {
		t.Fatalf("stale copy of 5 handed out as %v", seqs(out))
	}
}

// A takeover after a crash whose first delivery is new hands it out at once.
func TestAdmissionFirstDeliveryAfterACrash(t *testing.T) {
	first, _ := fetched(t, 1)
	var a admission
	tr := newTracker()
	a.expectBack(pendingAtTake{afterCrash: true}, time.Minute, func(uint64) { t.Error("flushed by the timer") })
	if out := a.admit(wrap(first[0], tr), tr); len(out) != 1 || out[0].Sequence() != 1 {
		t.Fatalf("first delivery handed out as %v, want [1]", seqs(out))
	}
}
