// Package brokertest is the conformance suite of the broker SPI. Every
// adapter runs it with one call:
//
//	func TestConformance(t *testing.T) {
//		brokertest.Run(t, func(t *testing.T) broker.Broker { return newAdapter(t) }, brokertest.Features{})
//	}
//
// Where a broker cannot offer a guarantee, the adapter names the test in
// Features.Skip with the reason; the skip is reported, never silent.
package brokertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
)

// Names of the suite's tests, for Features.Skip.
const (
	TestPublishConfirm      = "PublishConfirm"
	TestPublishInvalid      = "PublishInvalid"
	TestFanOut              = "FanOut"
	TestWorkQueue           = "WorkQueue"
	TestAckRemoves          = "AckRemoves"
	TestNackDelay           = "NackDelay"
	TestTerm                = "Term"
	TestRedeliverAfterCrash = "RedeliverAfterCrash"
	TestStartPositions      = "StartPositions"
	TestRouteFilter         = "RouteFilter"
	TestDedup               = "Dedup"
	TestKeyOrder            = "KeyOrder"
	TestNoLoss              = "NoLoss10k"
	TestCloseInFlight       = "CloseInFlight"
	TestHeaders             = "Headers"
)

// Features tunes the suite to an adapter.
type Features struct {
	// Skip maps a test name to the reason the adapter cannot pass it.
	Skip map[string]string
	// Quiet is how long to wait before concluding that nothing more will be
	// delivered. Default 500ms.
	Quiet time.Duration
	// Timeout bounds each wait for an expected delivery. Default 20s.
	Timeout time.Duration
	// TopicPrefix is prepended to the unique topic names the suite makes.
	TopicPrefix string
	// AckWait of the suite's subscriptions, except in the tests that
	// measure redelivery. Default 5s; raise it for slow brokers (a cluster
	// on a loaded machine), where an expired ack wait would redeliver.
	AckWait time.Duration
}

// NewBroker returns a broker for one test; it is closed with t.Cleanup by
// the suite.
type NewBroker func(t *testing.T) broker.Broker

// Run runs the whole suite as subtests of t.
func Run(t *testing.T, newBroker NewBroker, f Features) {
	if f.Quiet == 0 {
		f.Quiet = 500 * time.Millisecond
	}
	if f.Timeout == 0 {
		f.Timeout = 20 * time.Second
	}
	if f.AckWait == 0 {
		f.AckWait = 5 * time.Second
	}
	tests := []struct {
		name string
		fn   func(*testing.T, *suite)
	}{
		{TestPublishConfirm, testPublishConfirm},
		{TestPublishInvalid, testPublishInvalid},
		{TestHeaders, testHeaders},
		{TestFanOut, testFanOut},
		{TestWorkQueue, testWorkQueue},
		{TestAckRemoves, testAckRemoves},
		{TestNackDelay, testNackDelay},
		{TestTerm, testTerm},
		{TestRedeliverAfterCrash, testRedeliverAfterCrash},
		{TestStartPositions, testStartPositions},
		{TestRouteFilter, testRouteFilter},
		{TestDedup, testDedup},
		{TestKeyOrder, testKeyOrder},
		{TestNoLoss, testNoLoss},
		{TestCloseInFlight, testCloseInFlight},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if reason, ok := f.Skip[tc.name]; ok {
				t.Skip(reason)
			}
			t.Parallel()
			b := newBroker(t)
			t.Cleanup(func() { _ = b.Close() })
			tc.fn(t, &suite{b: b, f: f, topic: f.TopicPrefix + uniqueName("conf")})
		})
	}
}

type suite struct {
	b     broker.Broker
	f     Features
	topic string
}

func uniqueName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

func (s *suite) msg(i int, key string) *broker.Message {
	return &broker.Message{
		Topic:  s.topic,
		Route:  "test.item.v1",
		Key:    key,
		ID:     s.topic + "-" + strconv.Itoa(i),
		Header: map[string]string{"n": strconv.Itoa(i)},
		Data:   []byte(strconv.Itoa(i)),
	}
}

func (s *suite) publish(t *testing.T, from, to int, key func(i int) string) {
	t.Helper()
	const batch = 500
	for i := from; i < to; i += batch {
		end := min(i+batch, to)
		msgs := make([]*broker.Message, 0, end-i)
		for j := i; j < end; j++ {
			k := ""
			if key != nil {
				k = key(j)
			}
			msgs = append(msgs, s.msg(j, k))
		}
		if err := s.b.Publish(t.Context(), msgs...); err != nil {
			t.Fatalf("publish %d..%d: %v", i, end, err)
		}
	}
}

func (s *suite) subscribe(t *testing.T, group string, mod func(*broker.SubscribeOptions)) broker.Subscription {
	t.Helper()
	o := broker.SubscribeOptions{Group: group, Start: broker.FromFirst, AckWait: s.f.AckWait}
	if mod != nil {
		mod(&o)
	}
	sub, err := s.b.Subscribe(t.Context(), s.topic, o)
	if err != nil {
		t.Fatalf("subscribe group %s: %v", group, err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return sub
}

// next waits for one delivery or fails the test naming what was awaited.
func (s *suite) next(t *testing.T, sub broker.Subscription, what string) broker.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), s.f.Timeout)
	defer cancel()
	d, err := sub.Next(ctx)
	if err != nil {
		t.Fatalf("waiting %s for %s: %v", s.f.Timeout, what, err)
	}
	return d
}

// quiet asserts nothing is delivered within the quiet period.
func (s *suite) quiet(t *testing.T, sub broker.Subscription, why string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), s.f.Quiet)
	defer cancel()
	d, err := sub.Next(ctx)
	if err == nil {
		t.Fatalf("%s: got message %q (attempt %d), want none", why, d.Message().Data, d.Attempt())
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%s: Next: %v", why, err)
	}
}

func num(t *testing.T, d broker.Delivery) int {
	t.Helper()
	n, err := strconv.Atoi(string(d.Message().Data))
	if err != nil {
		t.Fatalf("payload %q is not a number: %v", d.Message().Data, err)
	}
	return n
}

func ack(t *testing.T, d broker.Delivery) {
	t.Helper()
	if err := d.Ack(t.Context()); err != nil {
		t.Fatalf("ack: %v", err)
	}
}

func testPublishConfirm(t *testing.T, s *suite) {
	s.publish(t, 0, 10, nil)
	sub := s.subscribe(t, "g", nil)
	for i := range 10 {
		d := s.next(t, sub, fmt.Sprintf("message %d", i))
		if got := num(t, d); got != i {
			t.Fatalf("delivery %d: got message %d", i, got)
		}
		if d.Attempt() != 1 || broker.Redelivered(d) {
			t.Fatalf("message %d: attempt %d, want first delivery", i, d.Attempt())
		}
		ack(t, d)
	}
}

func testPublishInvalid(t *testing.T, s *suite) {
	good := s.msg(1, "")
	bad := s.msg(2, "")
	bad.Route = "has space"
	err := s.b.Publish(t.Context(), good, bad)
	var pe *broker.PublishError
	if !errors.As(err, &pe) {
		t.Fatalf("publish with an invalid route: got %v, want *broker.PublishError", err)
	}
	if pe.Failed(0) != nil || pe.Failed(1) == nil {
		t.Fatalf("per-message errors %v: want only message 1 failed", pe.Errs)
	}
	if !errors.Is(err, broker.ErrInvalidMessage) {
		t.Fatalf("error %v does not wrap broker.ErrInvalidMessage", err)
	}
	badTopic := s.msg(3, "")
	badTopic.Topic = "no spaces allowed"
	if err := s.b.Publish(t.Context(), badTopic); !errors.Is(err, broker.ErrInvalidTopic) {
		t.Fatalf("publish to topic %q: got %v, want broker.ErrInvalidTopic", badTopic.Topic, err)
	}
	sub := s.subscribe(t, "g", nil)
	if d := s.next(t, sub, "the valid message"); num(t, d) != 1 {
		t.Fatalf("got message %q, want 1", d.Message().Data)
	}
}

func testHeaders(t *testing.T, s *suite) {
	m := s.msg(7, "key-7")
	m.Header["ce-id"] = "abc"
	m.Header["ce-datacontenttype"] = "application/json"
	if err := s.b.Publish(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	sub := s.subscribe(t, "g", nil)
	d := s.next(t, sub, "the message")
	got := d.Message()
	for k, v := range m.Header {
		if got.Header[k] != v {
			t.Errorf("header %q = %q, want %q", k, got.Header[k], v)
		}
	}
	if got.Topic != s.topic || got.Route != m.Route || string(got.Data) != "7" {
		t.Errorf("got topic %q route %q data %q, want %q %q %q", got.Topic, got.Route, got.Data, s.topic, m.Route, "7")
	}
	if got.Key != "key-7" {
		t.Errorf("key = %q, want %q", got.Key, "key-7")
	}
	if got.ID != m.ID {
		t.Errorf("id = %q, want %q", got.ID, m.ID)
	}
	if d.Sequence() == 0 {
		t.Errorf("sequence is 0, want a position")
	}
	if ts := d.Timestamp(); ts.IsZero() || time.Since(ts) > time.Minute {
		t.Errorf("timestamp %v is not recent", ts)
	}
	ack(t, d)
}

func testFanOut(t *testing.T, s *suite) {
	const n = 50
	a := s.subscribe(t, "ga", nil)
	b := s.subscribe(t, "gb", nil)
	s.publish(t, 0, n, nil)
	for _, sub := range []broker.Subscription{a, b} {
		seen := map[int]bool{}
		for len(seen) < n {
			d := s.next(t, sub, fmt.Sprintf("message %d of %d in each group", len(seen)+1, n))
			seen[num(t, d)] = true
			ack(t, d)
		}
		s.quiet(t, sub, "after every message was acked")
	}
}

func testWorkQueue(t *testing.T, s *suite) {
	const n = 200
	opt := func(o *broker.SubscribeOptions) { o.MaxInFlight = 5 }
	subs := []broker.Subscription{s.subscribe(t, "workers", opt), s.subscribe(t, "workers", opt)}
	s.publish(t, 0, n, nil)
	var mu sync.Mutex
	seen := map[int]int{}
	per := make([]int, len(subs))
	ctx, cancel := context.WithTimeout(t.Context(), s.f.Timeout)
	defer cancel()
	var wg sync.WaitGroup
	for i, sub := range subs {
		wg.Go(func() {
			for {
				d, err := sub.Next(ctx)
				if err != nil {
					return
				}
				m, _ := strconv.Atoi(string(d.Message().Data))
				mu.Lock()
				seen[m]++
				per[i]++
				done := len(seen) == n
				mu.Unlock()
				time.Sleep(time.Millisecond) // let the other member take a share
				if err := d.Ack(ctx); err != nil {
					t.Errorf("ack: %v", err)
				}
				if done {
					cancel()
				}
			}
		})
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("group received %d distinct messages, want %d", len(seen), n)
	}
	for m, c := range seen {
		if c != 1 {
			t.Errorf("message %d delivered %d times inside one group, want 1", m, c)
		}
	}
	if per[0] == 0 || per[1] == 0 {
		t.Errorf("split %v: both members should get a share", per)
	}
}

func testAckRemoves(t *testing.T, s *suite) {
	s.publish(t, 0, 1, nil)
	sub := s.subscribe(t, "g", nil)
	ack(t, s.next(t, sub, "message 0"))
	s.quiet(t, sub, "after ack")
	if err := sub.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	s.publish(t, 1, 2, nil)
	sub2 := s.subscribe(t, "g", nil)
	if d := s.next(t, sub2, "message 1 after rejoining"); num(t, d) != 1 {
		t.Fatalf("after rejoining got message %d, want 1 (0 was acked)", num(t, d))
	}
}

func testNackDelay(t *testing.T, s *suite) {
	const delay = 700 * time.Millisecond
	s.publish(t, 0, 1, nil)
	sub := s.subscribe(t, "g", nil)
	d := s.next(t, sub, "first delivery")
	nacked := time.Now()
	if err := d.Nack(t.Context(), delay); err != nil {
		t.Fatalf("nack: %v", err)
	}
	d2 := s.next(t, sub, "redelivery after nack")
	if waited := time.Since(nacked); waited < delay-50*time.Millisecond {
		t.Fatalf("redelivered after %v, want >= %v", waited, delay)
	}
	if d2.Attempt() != 2 || !broker.Redelivered(d2) {
		t.Fatalf("redelivery attempt %d, want 2", d2.Attempt())
	}
	if num(t, d2) != 0 {
		t.Fatalf("redelivered message %d, want 0", num(t, d2))
	}
	// Nack without delay redelivers promptly.
	start := time.Now()
	if err := d2.Nack(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	d3 := s.next(t, sub, "redelivery after nack(0)")
	if d3.Attempt() != 3 {
		t.Fatalf("attempt %d, want 3", d3.Attempt())
	}
	if waited := time.Since(start); waited > 3*time.Second {
		t.Fatalf("nack(0) redelivered after %v, want promptly", waited)
	}
	ack(t, d3)
}

func testTerm(t *testing.T, s *suite) {
	const ackWait = time.Second
	s.publish(t, 0, 2, nil)
	sub := s.subscribe(t, "g", func(o *broker.SubscribeOptions) { o.AckWait = ackWait })
	d := s.next(t, sub, "message 0")
	if err := d.Term(t.Context(), "poison"); err != nil {
		t.Fatalf("term: %v", err)
	}
	d1 := s.next(t, sub, "message 1")
	if num(t, d1) != 1 {
		t.Fatalf("got %d (attempt %d), want 1 (0 was terminated)", num(t, d1), d1.Attempt())
	}
	ack(t, d1)
	ctx, cancel := context.WithTimeout(t.Context(), ackWait+s.f.Quiet)
	defer cancel()
	if d, err := sub.Next(ctx); err == nil {
		t.Fatalf("terminated message came back: %q attempt %d", d.Message().Data, d.Attempt())
	}
}

func testRedeliverAfterCrash(t *testing.T, s *suite) {
	const ackWait = time.Second
	s.publish(t, 0, 1, nil)
	opt := func(o *broker.SubscribeOptions) { o.AckWait = ackWait }
	dead := s.subscribe(t, "g", opt)
	_ = s.next(t, dead, "message 0 to the member that dies") // never settled
	if err := dead.Close(); err != nil {
		t.Fatal(err)
	}
	alive := s.subscribe(t, "g", opt)
	d := s.next(t, alive, "redelivery to the surviving member")
	if num(t, d) != 0 || !broker.Redelivered(d) {
		t.Fatalf("got message %d attempt %d, want 0 redelivered", num(t, d), d.Attempt())
	}
	ack(t, d)
}

func testStartPositions(t *testing.T, s *suite) {
	s.publish(t, 0, 5, nil)
	first := s.subscribe(t, "from-first", nil)
	d := s.next(t, first, "first message for StartFirst")
	if num(t, d) != 0 {
		t.Fatalf("StartFirst: got %d, want 0", num(t, d))
	}
	seq3 := d.Sequence() + 2

	fromSeq := s.subscribe(t, "from-seq", func(o *broker.SubscribeOptions) { o.Start = broker.FromSequence(seq3) })
	if d := s.next(t, fromSeq, "message at seq 3"); num(t, d) != 2 {
		t.Fatalf("FromSequence(%d): got %d, want 2", seq3, num(t, d))
	}

	newOnly := s.subscribe(t, "from-new", func(o *broker.SubscribeOptions) { o.Start = broker.FromNew })
	// The pause keeps the broker's timestamps of the two batches apart.
	time.Sleep(50 * time.Millisecond)
	cut := time.Now()
	time.Sleep(50 * time.Millisecond)
	s.publish(t, 5, 7, nil)
	if d := s.next(t, newOnly, "first new message"); num(t, d) != 5 {
		t.Fatalf("StartNew: got %d, want 5", num(t, d))
	}
	fromTime := s.subscribe(t, "from-time", func(o *broker.SubscribeOptions) { o.Start = broker.FromTime(cut) })
	if d := s.next(t, fromTime, "first message after the cut"); num(t, d) != 5 {
		t.Fatalf("FromTime: got %d, want 5", num(t, d))
	}
}

func testRouteFilter(t *testing.T, s *suite) {
	sub := s.subscribe(t, "only-b", func(o *broker.SubscribeOptions) { o.Routes = []string{"test.b.v1"} })
	a, b := s.msg(1, ""), s.msg(2, "")
	a.Route, b.Route = "test.a.v1", "test.b.v1"
	if err := s.b.Publish(t.Context(), a, b); err != nil {
		t.Fatal(err)
	}
	d := s.next(t, sub, "the message with route test.b.v1")
	if d.Message().Route != "test.b.v1" || num(t, d) != 2 {
		t.Fatalf("got route %q message %d, want test.b.v1 / 2", d.Message().Route, num(t, d))
	}
	ack(t, d)
	s.quiet(t, sub, "route filter")
}

func testDedup(t *testing.T, s *suite) {
	s.publish(t, 0, 3, nil)
	s.publish(t, 0, 3, nil) // same ids again
	sub := s.subscribe(t, "g", nil)
	for i := range 3 {
		d := s.next(t, sub, fmt.Sprintf("message %d", i))
		if num(t, d) != i {
			t.Fatalf("got %d, want %d", num(t, d), i)
		}
		ack(t, d)
	}
	s.quiet(t, sub, "duplicates by id must be stored once")
}

func testKeyOrder(t *testing.T, s *suite) {
	const n, keys = 1000, 10
	s.publish(t, 0, n, func(i int) string { return "k" + strconv.Itoa(i%keys) })
	sub := s.subscribe(t, "g", nil)
	last := map[int]int{}
	for range n {
		d := s.next(t, sub, "ordered message")
		m := num(t, d)
		k := m % keys
		if prev, ok := last[k]; ok && m <= prev {
			t.Fatalf("key k%d: message %d after %d", k, m, prev)
		}
		last[k] = m
		ack(t, d)
	}
}

func testNoLoss(t *testing.T, s *suite) {
	const n = 10000
	sub := s.subscribe(t, "g", nil)
	var wg sync.WaitGroup
	seen := make([]bool, n)
	count := 0
	var recvErr error
	wg.Go(func() {
		ctx, cancel := context.WithTimeout(t.Context(), 2*s.f.Timeout)
		defer cancel()
		for count < n {
			d, err := sub.Next(ctx)
			if err != nil {
				recvErr = fmt.Errorf("after %d of %d messages: %w", count, n, err)
				return
			}
			i, err := strconv.Atoi(string(d.Message().Data))
			if err != nil || i < 0 || i >= n {
				recvErr = fmt.Errorf("bad payload %q", d.Message().Data)
				return
			}
			if !seen[i] {
				seen[i] = true
				count++
			}
			if err := d.Ack(ctx); err != nil {
				recvErr = err
				return
			}
		}
	})
	s.publish(t, 0, n, func(i int) string { return "k" + strconv.Itoa(i%64) })
	wg.Wait()
	if recvErr != nil {
		t.Fatal(recvErr)
	}
	if count != n {
		t.Fatalf("received %d distinct of %d", count, n)
	}
}

func testCloseInFlight(t *testing.T, s *suite) {
	const n = 1000
	const ackWait = 2 * time.Second
	s.publish(t, 0, n, nil)
	// MaxInFlight covers the 150 deliveries held unsettled below.
	opt := func(o *broker.SubscribeOptions) { o.AckWait = ackWait; o.MaxInFlight = 256 }
	acked := make([]bool, n)
	first := s.subscribe(t, "g", opt)
	var held []broker.Delivery
	// Take 300 deliveries, ack every other one, then close with the rest
	// unsettled and more in the adapter's buffers.
	for i := range 300 {
		d := s.next(t, first, "delivery before close")
		if i%2 == 0 {
			ack(t, d)
			acked[num(t, d)] = true
		} else {
			held = append(held, d)
		}
	}
	if err := first.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	// Deliveries taken before Close can still be settled.
	for i, d := range held {
		if i%2 == 0 {
			ack(t, d)
			acked[num(t, d)] = true
		}
	}
	second := s.subscribe(t, "g", opt)
	remaining := 0
	for _, a := range acked {
		if !a {
			remaining++
		}
	}
	for remaining > 0 {
		d := s.next(t, second, fmt.Sprintf("one of %d messages not yet acked", remaining))
		i := num(t, d)
		if !acked[i] {
			acked[i] = true
			remaining--
		}
		ack(t, d)
	}
}
