package natsjs

import (
	"slices"
	"sync"
	"time"
)

// tracker holds the deliveries a subscription received and that are not
// settled yet, and keeps them alive: every third of the ack wait it sends
// "in progress" for all of them, oldest stream sequence first. A delivery
// queued behind slow ones therefore never hits its ack wait while its
// subscription lives, and the deadlines keep stream order, so if the
// process dies they are redelivered in order.
//
// Deliveries are linked into a list through their own fields: adding and
// removing one allocates nothing and hashes nothing.
type tracker struct {
	mu         sync.Mutex
	head, tail *delivery
	n          int
}

func newTracker() *tracker { return &tracker{} }

func (t *tracker) add(d *delivery) {
	t.mu.Lock()
	d.prev, d.next = t.tail, nil
	if t.tail != nil {
		t.tail.next = d
	} else {
		t.head = d
	}
	t.tail = d
	t.n++
	t.mu.Unlock()
}

func (t *tracker) remove(d *delivery) {
	t.mu.Lock()
	if d.prev != nil {
		d.prev.next = d.next
	} else if t.head == d {
		t.head = d.next
	}
	if d.next != nil {
		d.next.prev = d.prev
	} else if t.tail == d {
		t.tail = d.prev
	}
	d.prev, d.next = nil, nil
	t.n--
	t.mu.Unlock()
}

// has reports whether a delivery of stream sequence seq is tracked.
func (t *tracker) has(seq uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for d := t.head; d != nil; d = d.next {
		if d.Sequence() == seq {
			return true
		}
	}
	return false
}

// revokeQueued takes back every tracked delivery not claimed yet.
func (t *tracker) revokeQueued() {
	t.mu.Lock()
	for d := t.head; d != nil; d = d.next {
		d.revoke()
	}
	t.mu.Unlock()
}

// claimed counts the tracked deliveries that are being handled.
func (t *tracker) claimed() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for d := t.head; d != nil; d = d.next {
		if d.state.Load() == claimed {
			n++
		}
	}
	return n
}

// revoked returns the tracked deliveries taken back, in stream order.
func (t *tracker) revoked() []*delivery {
	t.mu.Lock()
	var ds []*delivery
	for d := t.head; d != nil; d = d.next {
		if d.state.Load() == revoked {
			ds = append(ds, d)
		}
	}
	t.mu.Unlock()
	sortBySequence(ds)
	return ds
}

func sortBySequence(ds []*delivery) {
	slices.SortFunc(ds, func(a, b *delivery) int {
		sa, sb := a.Sequence(), b.Sequence()
		switch {
		case sa < sb:
			return -1
		case sa > sb:
			return 1
		}
		return 0
	})
}

// touch signals progress for every tracked delivery in stream order.
func (t *tracker) touch() {
	t.mu.Lock()
	ds := make([]*delivery, 0, t.n)
	for d := t.head; d != nil; d = d.next {
		ds = append(ds, d)
	}
	t.mu.Unlock()
	// Arrival order is stream order except for redeliveries.
	sortBySequence(ds)
	for _, d := range ds {
		if !d.settled.Load() {
			_ = d.m.InProgress()
		}
	}
}

// keepAlive touches t every ackWait/3 until stop is closed or done()
// reports true.
func (t *tracker) keepAlive(ackWait time.Duration, stop <-chan struct{}, done func() bool) {
	tk := time.NewTicker(max(ackWait/3, 10*time.Millisecond))
	defer tk.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tk.C:
			if done != nil && done() {
				return
			}
			t.touch()
		}
	}
}
