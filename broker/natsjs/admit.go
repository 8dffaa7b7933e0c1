package natsjs

import (
	"slices"
	"sync"
	"time"
)

// recentSize is how many received stream sequences a partition remembers
// to recognise a stale redelivery of one it already had.
const recentSize = 2048

// admission decides, for each delivery of an owned partition, whether it
// is handed to the router and when, so that a partition's events reach
// the router in stream order even where JetStream redelivers out of it:
//
//   - A stale redelivery: the server redelivers a message whose ack wait
//     ran out while this member still held it (a process starved for
//     longer than the ack wait keeps its keepalive from running), or whose
//     ack crossed the expiry. It comes after later events were received,
//     so handling it would go back in the key's order. If the first copy
//     is still tracked it is dropped (acknowledging the first copy settles
//     both: the server acknowledges by stream sequence); if it was settled
//     already the copy is acknowledged at once. Redeliveries of messages
//     this member nacked itself are real retries and go through.
//   - Given back by the previous owner: the server queues nacked messages
//     for redelivery in the order it got the nacks, but a message whose ack
//     wait ran out before its nack was queued earlier, so the previous
//     owner's in-order nacks can come back out of order, and a delivery
//     that went astray at the release (in flight to the previous owner) can
//     come due before them. The previous owner records what it gave back,
//     and the next owner counts what else was pending when it took the
//     partition (deliveries that never reached the previous owner, whose
//     ack waits ran out in whatever order and which the server queued
//     behind the nacked ones, or ahead of them); admission holds everything
//     that arrives until all of that arrived and hands it out sorted. If
//     some of it never comes (it was settled after all), holding ends once
//     nothing arrived for the wait (twice the ack wait); the wait counts
//     from the arrivals, not from the acquisition, so a slow start (a
//     loaded machine, a slow first pull) does not end it before anything
//     came.
type admission struct {
	mu     sync.Mutex
	hi     uint64              // highest stream sequence received
	nacked map[uint64]struct{} // nacked by this member for redelivery
	recent [recentSize]uint64  // ring of received sequences
	next   int
	expect map[uint64]struct{} // given back by the previous owner, not received yet
	// others counts the other deliveries pending at the acquisition (at
	// or below the stream sequence below) that have not arrived yet.
	others int
	below  uint64
	// redeliveries is set after a takeover that reset the partition (or,
	// on servers that cannot reset, left the dead owner's deliveries to
	// come due): until the first first-time delivery arrives, the
	// redeliveries that come are held and handed out sorted.
	redeliveries bool
	held         []*delivery
	wait         time.Duration
	fire         func(gen uint64)
	timer        *time.Timer
	gen          uint64 // which timer may end holding
}

// pendingAtTake is what was pending on a partition when this member took
// it: the next deliveries wait until all of it arrived.
type pendingAtTake struct {
	back   []uint64 // stream sequences the previous owner gave back
	others int      // further deliveries pending, not among back
	below  uint64   // the partition's last delivered stream sequence
	// afterCrash is set when the previous owner left without settling
	// or giving back: the partition was reset to its ack floor, so every
	// delivery should come for the first time. A redelivery then went to
	// another client after the reset: a member stalled past its pin's
	// lifetime, which got the pin back for a moment on waking before it
	// saw the partition taken. Its copies come due in the order their ack
	// waits end, which its keepalive may have made other than stream
	// order, and all before anything new (JetStream redelivers first).
	afterCrash bool
}

// expectBack makes the next deliveries wait until everything in p arrived.
// If nothing arrives for wait while some is missing, fire is called with
// the timer's generation: it takes what arrived with flush, under the same
// lock as the deliveries it hands out after them.
func (a *admission) expectBack(p pendingAtTake, wait time.Duration, fire func(gen uint64)) {
	if len(p.back) == 0 && p.others == 0 && !p.afterCrash {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.redeliveries = p.afterCrash
	a.expect = make(map[uint64]struct{}, len(p.back))
	for _, s := range p.back {
		a.expect[s] = struct{}{}
	}
	a.others, a.below = p.others, p.below
	a.wait, a.fire = wait, fire
}

// holdingLocked reports whether something pending at the acquisition has
// not arrived yet. Called with a.mu held.
func (a *admission) holdingLocked() bool {
	return len(a.expect) > 0 || a.others > 0 || a.redeliveries
}

// flush ends holding and returns what was held, in stream order, and how
// many of the deliveries waited for never came, if gen is the generation of
// the latest timer (a timer that fired while a delivery was being
// admitted, which restarted or ended holding, flushes nothing).
func (a *admission) flush(gen uint64) (ds []*delivery, missing int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if gen != a.gen || a.timer == nil {
		return nil, 0
	}
	missing = len(a.expect) + a.others
	return a.flushLocked(), missing
}

// noteNack records that this member nacked seq: its redelivery is a retry.
func (a *admission) noteNack(seq uint64) {
	a.mu.Lock()
	if a.nacked == nil {
		a.nacked = map[uint64]struct{}{}
	}
	a.nacked[seq] = struct{}{}
	a.mu.Unlock()
}

// admit tracks d in tr unless it is a stale copy, and returns the
// deliveries to hand out now, in order (none while d is held).
func (a *admission) admit(d *delivery, tr *tracker) []*delivery {
	seq := d.Sequence()
	a.mu.Lock()
	defer a.mu.Unlock()
	if d.Attempt() > 1 {
		if stale, held := a.stale(seq, tr); stale {
			if !held {
				_ = d.m.Ack()
			}
			return nil
		}
	}
	holding := a.holdingLocked()
	if holding && tr.has(seq) {
		return nil // a copy of one held: it counts once
	}
	a.recent[a.next] = seq
	a.next = (a.next + 1) % recentSize
	tr.add(d)
	if holding {
		if a.redeliveries && d.Attempt() == 1 {
			// Nothing is redelivered ahead of what is new any more.
			a.redeliveries = false
		}
		if _, ok := a.expect[seq]; ok {
			delete(a.expect, seq)
		} else if seq <= a.below && a.others > 0 {
			a.others--
		}
		a.held = append(a.held, d)
		if a.holdingLocked() {
			a.restartTimerLocked()
			return nil
		}
		return a.flushLocked()
	}
	a.hi = max(a.hi, seq)
	return []*delivery{d}
}

// restartTimerLocked makes holding end after the wait unless something
// arrives first. Called with a.mu held.
func (a *admission) restartTimerLocked() {
	if a.timer != nil {
		a.timer.Stop()
	}
	a.gen++
	gen, fire := a.gen, a.fire
	a.timer = time.AfterFunc(a.wait, func() { fire(gen) })
}

// stale reports whether a redelivery of seq copies a delivery this member
// received before, and not a retry it asked for, and whether that first
// copy is still tracked. Called with a.mu held.
func (a *admission) stale(seq uint64, tr *tracker) (stale, held bool) {
	if _, ok := a.nacked[seq]; ok {
		delete(a.nacked, seq)
		return false, false
	}
	if seq > a.hi {
		return false, false
	}
	if tr.has(seq) {
		return true, true
	}
	return slices.Contains(a.recent[:], seq), false
}

// flushLocked ends holding and returns what was held, in stream order.
func (a *admission) flushLocked() []*delivery {
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
	}
	a.gen++
	a.expect, a.others, a.redeliveries = nil, 0, false
	ds := a.held
	a.held = nil
	sortBySequence(ds)
	for _, d := range ds {
		a.hi = max(a.hi, d.Sequence())
	}
	return ds
}

// stop ends holding without handing anything out: the partition is given
// up, and its release takes back what was held (it is tracked).
func (a *admission) stop() {
	a.mu.Lock()
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
	}
	a.gen++
	a.expect, a.others, a.held, a.redeliveries = nil, 0, nil, false
	a.mu.Unlock()
}
