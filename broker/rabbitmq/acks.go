package rabbitmq

import (
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Ack coalescing. A busy subscription acks one message after another, and
// amqp091-go writes (and flushes) a frame for each: a system call per
// message on the client and a frame to handle on the broker. AMQP's
// multiple ack settles every unacked delivery up to a tag in one frame, but
// it must never cover a delivery that is still being handled, nor one
// that was already settled on its own (RabbitMQ closes the channel on an
// unknown tag). The acker therefore tracks every delivery tag of its
// channel (tags count up from 1, one per delivery on the channel) and:
//
//   - sends one multiple ack for the longest run of settled tags from the
//     oldest, ending at an ack not yet sent;
//   - sends at once when ackBatch acks wait, or when nothing received is
//     left unsettled (an idle subscription pays no delay), else within
//     ackLinger;
//   - acks on their own, after ackLinger, the acks a delivery still in
//     its handler keeps from a multiple ack, so a slow handler holds back
//     neither acks nor the prefetch window.
//
// Nacks and rejects are sent at once, each on its own, through the acker
// too, so that it knows every tag settled.

const (
	ackBatch  = 64
	ackLinger = 2 * time.Millisecond
)

// Tag states.
const (
	tagOpen   uint8 = iota // delivered (or still on its way), not settled
	tagUnsent              // acked by the handler, ack not sent yet
	tagSent                // settled on the broker (acked, nacked or rejected)
)

// ackChannel is what the acker sends on (an *amqp.Channel).
type ackChannel interface {
	Ack(tag uint64, multiple bool) error
	Nack(tag uint64, multiple, requeue bool) error
	Reject(tag uint64, requeue bool) error
}

type acker struct {
	ch ackChannel

	mu sync.Mutex // also serialises sends: a multiple ack must not overtake
	// floor is the highest tag below which every tag is settled on the
	// broker; tags[i] is the state of tag floor+1+i.
	floor  uint64
	tags   []uint8
	unsent int // tags in tagUnsent
	open   int // tags in tagOpen
	timer  *time.Timer
	armed  bool
	// stuck is the floor at the last timer flush that left acks unsent:
	// if the next finds the same floor, those are sent on their own.
	stuck  uint64
	closed bool
	sends  int // ack frames sent (tests)
}

func newAcker(ch ackChannel) *acker {
	a := &acker{ch: ch}
	a.timer = time.AfterFunc(time.Hour, a.linger)
	a.timer.Stop()
	return a
}

// slot returns the state of tag, growing the window to it.
func (a *acker) slot(tag uint64) *uint8 {
	i := int(tag - a.floor - 1)
	for i >= len(a.tags) {
		a.tags = append(a.tags, tagOpen)
		a.open++
	}
	return &a.tags[i]
}

// received records that Next returned tag's delivery: until it is
// settled, nothing above it can be covered by a multiple ack.
func (a *acker) received(tag uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.closed && tag > a.floor {
		a.slot(tag)
	}
}

// ack records that tag was handled and sends what can be sent now: at
// once when now is set (exactly-once groups, which confirm the ack), when
// enough acks wait or when nothing received is left open. The error is
// that of a send made in this call.
func (a *acker) ack(tag uint64, now bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed || tag <= a.floor {
		return nil
	}
	p := a.slot(tag)
	if *p != tagOpen {
		return nil
	}
	*p = tagUnsent
	a.unsent++
	a.open--
	if now {
		return a.flushLocked(true)
	}
	if a.unsent >= ackBatch || a.open == 0 {
		return a.flushLocked(false)
	}
	if !a.armed {
		a.armed = true
		a.timer.Reset(ackLinger)
	}
	return nil
}

// nack requeues tag's message at once.
func (a *acker) nack(tag uint64) error {
	err := a.ch.Nack(tag, false, true)
	a.sent(tag)
	return err
}

// reject rejects tag's message at once, without requeue.
func (a *acker) reject(tag uint64) error {
	err := a.ch.Reject(tag, false)
	a.sent(tag)
	return err
}

// sent records that tag was settled on the broker on its own.
func (a *acker) sent(tag uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed || tag <= a.floor {
		return
	}
	p := a.slot(tag)
	switch *p {
	case tagSent:
		return
	case tagUnsent:
		a.unsent--
	case tagOpen:
		a.open--
	}
	*p = tagSent
	a.advanceLocked()
	if a.unsent > 0 && a.open == 0 {
		_ = a.flushLocked(false)
	}
}

// advanceLocked moves the floor over settled-and-sent tags: they need no
// frame any more.
func (a *acker) advanceLocked() {
	k := 0
	for k < len(a.tags) && a.tags[k] == tagSent {
		k++
	}
	a.floor += uint64(k)
	a.tags = a.tags[k:]
}

// flushLocked sends one multiple ack for the settled run from the floor,
// up to its last unsent ack; with all set, also every unsent ack above
// the run, each on its own.
func (a *acker) flushLocked(all bool) error {
	run := 0 // settled tags from the floor
	last := -1
	for run < len(a.tags) && a.tags[run] != tagOpen {
		if a.tags[run] == tagUnsent {
			last = run
		}
		run++
	}
	var err error
	if last >= 0 {
		err = a.ch.Ack(a.floor+1+uint64(last), true)
		a.sends++
		for i := 0; i <= last; i++ {
			if a.tags[i] == tagUnsent {
				a.unsent--
			}
		}
		a.floor += uint64(last + 1)
		a.tags = a.tags[last+1:]
		a.advanceLocked()
	}
	if all && err == nil {
		for i, st := range a.tags {
			if st != tagUnsent {
				continue
			}
			if err = a.ch.Ack(a.floor+1+uint64(i), false); err != nil {
				break
			}
			a.sends++
			a.tags[i] = tagSent
			a.unsent--
		}
		a.advanceLocked()
	}
	if err != nil {
		// The channel failed: it is gone with every unacked delivery,
		// which RabbitMQ requeues.
		a.closeLocked()
	}
	return err
}

// linger is the timer: it sends the run that has waited, and the acks
// behind a delivery that has kept the floor since the last time.
func (a *acker) linger() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.armed = false
	if a.closed || a.unsent == 0 {
		return
	}
	_ = a.flushLocked(a.floor == a.stuck)
	if a.unsent > 0 && !a.closed {
		a.stuck = a.floor
		a.armed = true
		a.timer.Reset(ackLinger)
	}
}

// flush sends every ack not yet sent; before the channel is closed on
// purpose.
func (a *acker) flush() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	return a.flushLocked(true)
}

// close drops what was not sent: the channel is gone.
func (a *acker) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closeLocked()
}

func (a *acker) closeLocked() {
	a.closed = true
	a.timer.Stop()
	a.tags = nil
	a.unsent, a.open = 0, 0
}

var _ ackChannel = (*amqp.Channel)(nil)
