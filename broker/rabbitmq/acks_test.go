package rabbitmq

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
)

// unackedSet plays RabbitMQ's side of a channel's acks: the deliveries it
// holds unacked, and the rule that an ack of a tag it does not hold
// closes the channel (PRECONDITION_FAILED, unknown delivery tag). inHandler
// marks deliveries a handler still runs: an ack that covers one would lose
// it.
type unackedSet struct {
	mu        sync.Mutex
	unacked   map[uint64]bool
	inHandler map[uint64]bool
	frames    int
	err       error
}

func newUnackedSet(n int) *unackedSet {
	u := &unackedSet{unacked: map[uint64]bool{}, inHandler: map[uint64]bool{}}
	for tag := uint64(1); tag <= uint64(n); tag++ {
		u.unacked[tag], u.inHandler[tag] = true, true
	}
	return u
}

func (u *unackedSet) fail(format string, args ...any) error {
	if u.err == nil {
		u.err = fmt.Errorf(format, args...)
	}
	return u.err
}

func (u *unackedSet) Ack(tag uint64, multiple bool) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.frames++
	if !u.unacked[tag] {
		return u.fail("ack of tag %d (multiple %v), which is not unacked: the channel closes", tag, multiple)
	}
	for t := range u.unacked {
		if t == tag || (multiple && t < tag) {
			if u.inHandler[t] {
				return u.fail("ack %d (multiple %v) covers tag %d, still in its handler", tag, multiple, t)
			}
			delete(u.unacked, t)
		}
	}
	return nil
}

func (u *unackedSet) Nack(tag uint64, multiple, _ bool) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if multiple {
		return u.fail("nack of tag %d with multiple: the acker sends nacks on their own", tag)
	}
	if !u.unacked[tag] {
		return u.fail("nack of tag %d, which is not unacked", tag)
	}
	delete(u.unacked, tag)
	return nil
}

func (u *unackedSet) Reject(tag uint64, _ bool) error { return u.Nack(tag, false, false) }

// settle is what the adapter does when a handler finishes tag: nack or
// ack, both through the acker.
func (u *unackedSet) settle(t *testing.T, a *acker, tag uint64, nack bool) {
	t.Helper()
	u.mu.Lock()
	delete(u.inHandler, tag)
	u.mu.Unlock()
	var err error
	if nack {
		err = a.nack(tag)
	} else {
		err = a.ack(tag, false)
	}
	if err != nil {
		t.Fatalf("settle %d (nack %v): %v", tag, nack, err)
	}
}

func (u *unackedSet) check(t *testing.T) {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.err != nil {
		t.Fatal(u.err)
	}
}

// waitUnacked waits (bounded) until the broker holds want unacked
// deliveries.
func (u *unackedSet) waitUnacked(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		u.mu.Lock()
		left, err := len(u.unacked), u.err
		u.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if left == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries unacked after 10 s, want %d", left, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// received returns a broker holding tags 1..n unacked and an acker that
// has received them all.
func received(t *testing.T, n int) (*unackedSet, *acker) {
	t.Helper()
	u := newUnackedSet(n)
	a := newAcker(u)
	t.Cleanup(a.close)
	for tag := uint64(1); tag <= uint64(n); tag++ {
		a.received(tag)
	}
	return u, a
}

func TestAckerCoalescesInOrderAcks(t *testing.T) {
	const n = 1000
	u, a := received(t, n)
	for tag := uint64(1); tag <= n; tag++ {
		u.settle(t, a, tag, false)
	}
	u.waitUnacked(t, 0)
	u.mu.Lock()
	defer u.mu.Unlock()
	// All received before the first ack: batches of ackBatch.
	if want := n / ackBatch; u.frames > want+1 {
		t.Errorf("%d ack frames for %d in-order acks, want about %d", u.frames, n, want)
	}
}

func TestAckerIdleSubscriptionAcksAtOnce(t *testing.T) {
	u := newUnackedSet(3)
	a := newAcker(u)
	defer a.close()
	for tag := uint64(1); tag <= 3; tag++ {
		a.received(tag)
		u.settle(t, a, tag, false)
		u.mu.Lock()
		left := len(u.unacked)
		u.mu.Unlock()
		if left != 3-int(tag) {
			t.Fatalf("after acking tag %d with nothing else open, %d unacked; want it sent at once", tag, left)
		}
	}
}

// A delivery held by a slow handler keeps the run below it from a
// multiple ack; the acks above it still go out within a few lingers, one
// by one, so the prefetch window does not fill.
func TestAckerSlowHandlerHoldsNothingBack(t *testing.T) {
	const n = 200
	u, a := received(t, n)
	for tag := uint64(1); tag <= n; tag++ {
		if tag != 5 {
			u.settle(t, a, tag, false)
		}
	}
	u.waitUnacked(t, 1) // only the slow handler's own
	u.settle(t, a, 5, false)
	u.waitUnacked(t, 0)
}

// Random settle orders, nacks among the acks, receipt out of order (the
// merged deliveries of several queues) and concurrent handlers: no ack
// covers a delivery still in its handler or one settled already, and
// everything is acked in the end.
func TestAckerRandomOrders(t *testing.T) {
	for seed := range uint64(30) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			n := 50 + r.IntN(2000)
			u := newUnackedSet(n)
			a := newAcker(u)
			defer a.close()
			tags := make([]uint64, n)
			for i := range tags {
				tags[i] = uint64(i + 1)
			}
			// Receipt: in order but with local swaps.
			recv := append([]uint64(nil), tags...)
			for i := range recv {
				if j := i + r.IntN(8); j < len(recv) {
					recv[i], recv[j] = recv[j], recv[i]
				}
			}
			nacks := map[uint64]bool{}
			for _, tag := range tags {
				nacks[tag] = r.IntN(10) == 0
			}
			workers := 1 + r.IntN(8)
			work := make(chan uint64, n)
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for tag := range work {
						u.settle(t, a, tag, nacks[tag])
					}
				})
			}
			for _, tag := range recv {
				a.received(tag)
				work <- tag
			}
			close(work)
			wg.Wait()
			u.waitUnacked(t, 0)
			u.check(t)
		})
	}
}

// flush sends everything at once, before the channel is closed on
// purpose; after close nothing is sent.
func TestAckerFlushAndClose(t *testing.T) {
	u, a := received(t, 10)
	for _, tag := range []uint64{2, 3, 7, 9} {
		u.settle(t, a, tag, false)
	}
	if err := a.flush(); err != nil {
		t.Fatal(err)
	}
	u.mu.Lock()
	left := len(u.unacked)
	u.mu.Unlock()
	if left != 6 {
		t.Fatalf("after flush %d unacked, want the 6 never acked", left)
	}
	a.close()
	u.mu.Lock()
	frames := u.frames
	u.mu.Unlock()
	u.settle(t, a, 1, false) // a closed acker neither sends nor arms its timer
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.frames != frames {
		t.Errorf("a closed acker sent %d frames", u.frames-frames)
	}
}

// On RabbitMQ: 8 handlers ack concurrently, a tenth of the messages are
// nacked once first. With a prefetch of 128 the group would stall after
// 128 messages if the broker did not take the coalesced acks; an ack it
// refused would close the channel and redeliver others. Every message is
// handled once more than it was nacked, and there are far fewer ack frames
// than messages.
func TestAcksCoalesceOnRabbitMQ(t *testing.T) {
	t.Parallel()
	b := newTestBroker(t)
	const n = 3000
	sub, msgs := groupAndMessages(t, b, "acks", 128, n)
	if err := b.Publish(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var (
		mu      sync.Mutex
		acked   = map[string]int{} // id -> attempt it was acked on
		problem error
		wg      sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			for {
				mu.Lock()
				done := len(acked) == n || problem != nil
				mu.Unlock()
				if done {
					return
				}
				d, err := sub.Next(ctx)
				if err != nil {
					mu.Lock()
					if problem == nil && len(acked) < n {
						problem = fmt.Errorf("Next after %d acked: %w", len(acked), err)
					}
					mu.Unlock()
					cancel()
					return
				}
				id := d.Message().ID
				i, _ := strconv.Atoi(id)
				if i%10 == 0 && d.Attempt() == 1 {
					err = d.Nack(ctx, 0)
				} else {
					err = d.Ack(ctx)
				}
				mu.Lock()
				switch {
				case err != nil:
					problem = fmt.Errorf("settle %s: %w", id, err)
				case acked[id] != 0:
					problem = fmt.Errorf("message %s handled again (attempt %d) after it was acked", id, d.Attempt())
				case d.Attempt() != 1 && i%10 != 0:
					problem = fmt.Errorf("message %s redelivered (attempt %d) though never nacked", id, d.Attempt())
				default:
					if i%10 != 0 || d.Attempt() > 1 {
						acked[id] = d.Attempt()
					}
				}
				if len(acked) == n {
					cancel() // wakes the other handlers
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if problem != nil {
		t.Fatal(problem)
	}
	if len(acked) != n {
		t.Fatalf("%d of %d messages acked", len(acked), n)
	}
	s := sub.(*subscription)
	s.mu.Lock()
	st := s.st
	s.mu.Unlock()
	if st == nil {
		t.Fatal("the subscription's channel is down")
	}
	st.acks.mu.Lock()
	frames := st.acks.sends
	st.acks.mu.Unlock()
	t.Logf("%d messages acked (%d after a nack) in %d ack frames", n, n/10, frames)
	if frames >= n/2 {
		t.Errorf("%d ack frames for %d acks: not coalesced", frames, n)
	}
}

// groupAndMessages makes a topic, joins group g on it with maxInFlight
// (0: the default) and returns n numbered messages for it, not yet
// published.
func groupAndMessages(t *testing.T, b *tracked, prefix string, maxInFlight, n int) (broker.Subscription, []*broker.Message) {
	t.Helper()
	topic := uniq(prefix)
	if err := b.EnsureTopic(t.Context(), topic, broker.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe(t.Context(), topic, broker.SubscribeOptions{Group: "g", MaxInFlight: maxInFlight})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	msgs := make([]*broker.Message, n)
	for i := range msgs {
		msgs[i] = &broker.Message{Topic: topic, Route: prefix + ".v1", ID: strconv.Itoa(i), Data: []byte(strconv.Itoa(i))}
	}
	return sub, msgs
}
