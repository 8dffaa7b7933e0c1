package kafka_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/kafka"
)

// TestRetryTopicDelay nacks three messages with different delays: each
// comes back through the group's retry topic after its own delay (a long
// delay does not hold back a shorter one), with attempt 2.
func TestRetryTopicDelay(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	b := newBroker(t, c)
	topic := "retry"
	if err := b.Publish(t.Context(), msgs(topic, 0, 3, nil)...); err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, b, topic, "g", nil)
	delays := []time.Duration{1500 * time.Millisecond, 300 * time.Millisecond, 800 * time.Millisecond}
	nacked := map[int]time.Time{}
	for i := range 3 {
		d := next(t, sub, "first delivery")
		n := num(t, d)
		if n != i {
			t.Fatalf("first deliveries out of order: got %d, want %d", n, i)
		}
		nacked[n] = time.Now()
		if err := d.Nack(t.Context(), delays[n]); err != nil {
			t.Fatalf("nack %d: %v", n, err)
		}
	}
	var order []int
	for range 3 {
		d := next(t, sub, "a redelivery from the retry topic")
		n := num(t, d)
		if waited := time.Since(nacked[n]); waited < delays[n]-20*time.Millisecond {
			t.Errorf("message %d redelivered after %v, want >= %v", n, waited, delays[n])
		}
		if d.Attempt() != 2 {
			t.Errorf("message %d: attempt %d, want 2", n, d.Attempt())
		}
		m := d.Message()
		if m.Topic != topic || m.Route != "test.item.v1" || m.ID != topic+"-"+strconv.Itoa(n) {
			t.Errorf("redelivered message %+v lost its topic, route or id", m)
		}
		if d.Sequence() != uint64(n+1) {
			t.Errorf("message %d: sequence %d, want its original %d", n, d.Sequence(), n+1)
		}
		order = append(order, n)
		if err := d.Ack(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if order[0] != 1 || order[1] != 2 || order[2] != 0 {
		t.Errorf("redelivery order %v, want [1 2 0] (by due time)", order)
	}

	// The retry records are in the group's retry topic, with their headers.
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...),
		kgo.ConsumeTopics(kafka.RetryTopic(topic, "g")), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < 3 && ctx.Err() == nil {
		recs = append(recs, cl.PollFetches(ctx).Records()...)
	}
	if len(recs) != 3 {
		t.Fatalf("retry topic has %d records, want 3", len(recs))
	}
	for _, r := range recs {
		var attempt, due bool
		for _, h := range r.Headers {
			attempt = attempt || (h.Key == kafka.HeaderAttempt && string(h.Value) == "2")
			due = due || h.Key == kafka.HeaderDue
		}
		if !attempt || !due {
			t.Errorf("retry record %q headers %v: want %s=2 and %s", r.Value, r.Headers, kafka.HeaderAttempt, kafka.HeaderDue)
		}
	}
}

// TestRetrySurvivesMember nacks with a delay, closes the member before the
// retry is due, and checks that the next member delivers it when due.
func TestRetrySurvivesMember(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	b := newBroker(t, c)
	topic := "retry-handover"
	if err := b.Publish(t.Context(), msgs(topic, 0, 1, nil)...); err != nil {
		t.Fatal(err)
	}
	first := subscribe(t, b, topic, "g", nil)
	d := next(t, first, "first delivery")
	const delay = time.Second
	nacked := time.Now()
	if err := d.Nack(t.Context(), delay); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second := subscribe(t, b, topic, "g", nil)
	d = next(t, second, "the retry after the hand-over")
	if waited := time.Since(nacked); waited < delay-20*time.Millisecond {
		t.Errorf("redelivered after %v, want >= %v", waited, delay)
	}
	if num(t, d) != 0 || d.Attempt() != 2 {
		t.Errorf("got message %d attempt %d, want 0 attempt 2", num(t, d), d.Attempt())
	}
	if err := d.Ack(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if d, err := second.Next(ctx); err == nil {
		t.Fatalf("message %q delivered again (attempt %d) after the retry was acked", d.Message().Data, d.Attempt())
	}
}

// TestAckWaitAndInProgress checks redelivery after the ack wait, with a
// growing attempt, and that InProgress postpones it.
func TestAckWaitAndInProgress(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	b := newBroker(t, c)
	topic := "ackwait"
	if err := b.Publish(t.Context(), msgs(topic, 0, 1, nil)...); err != nil {
		t.Fatal(err)
	}
	const wait = 400 * time.Millisecond
	sub := subscribe(t, b, topic, "g", func(o *broker.SubscribeOptions) { o.AckWait = wait })
	d1 := next(t, sub, "first delivery")
	got := time.Now()
	d2 := next(t, sub, "redelivery after the ack wait")
	if since := time.Since(got); since < wait-20*time.Millisecond {
		t.Errorf("redelivered after %v, want >= %v", since, wait)
	}
	if d2.Attempt() != 2 || !broker.Redelivered(d2) {
		t.Errorf("attempt %d, want 2", d2.Attempt())
	}
	if err := d1.Ack(t.Context()); err != nil {
		t.Fatalf("late ack of a superseded delivery: %v", err)
	}
	// Keep d2 alive past two ack waits with InProgress every quarter wait
	// (the sleeps stand for a handler's work).
	for range 9 {
		time.Sleep(wait / 4)
		if err := d2.InProgress(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), wait/4)
	defer cancel()
	if d, err := sub.Next(ctx); err == nil {
		t.Fatalf("redelivered (attempt %d) although InProgress kept it", d.Attempt())
	}
	if err := d2.Ack(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestMaxInFlight checks that Next blocks at MaxInFlight unsettled
// deliveries and resumes when one is settled.
func TestMaxInFlight(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	b := newBroker(t, c)
	topic := "inflight"
	if err := b.Publish(t.Context(), msgs(topic, 0, 10, nil)...); err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, b, topic, "g", func(o *broker.SubscribeOptions) { o.MaxInFlight = 3 })
	var held []broker.Delivery
	for range 3 {
		held = append(held, next(t, sub, "delivery under the limit"))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := sub.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next at the limit: %v, want it to block", err)
	}
	if err := held[0].Ack(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d := next(t, sub, "delivery after an ack freed a slot"); num(t, d) != 3 {
		t.Fatalf("got %d, want 3", num(t, d))
	}
}

// TestKeyPartition checks that a keyed message lands on
// broker.Partition(key, n), the mapping every adapter shares, and that
// Sequence packs the partition and offset.
func TestKeyPartition(t *testing.T) {
	t.Parallel()
	const parts = 8
	c := newCluster(t)
	b := newBroker(t, c, kafka.WithTopicDefaults(broker.TopicConfig{Partitions: parts}))
	topic := "keys"
	key := func(i int) string { return "order-" + strconv.Itoa(i) }
	if err := b.Publish(t.Context(), msgs(topic, 0, 64, key)...); err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, b, topic, "g", nil)
	used := map[int]bool{}
	for range 64 {
		d := next(t, sub, "keyed message")
		n := num(t, d)
		p := int(d.Sequence() >> 48)
		if want := broker.Partition(key(n), parts); p != want {
			t.Errorf("key %s on partition %d, want %d", key(n), p, want)
		}
		used[p] = true
		if err := d.Ack(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if len(used) < parts/2 {
		t.Errorf("64 keys used only partitions %v", used)
	}
}

// TestFromSequenceMultiPartition starts a group at a sequence on a topic
// with several partitions: that partition starts at the offset, the others
// at the first record at or after its time.
func TestFromSequenceMultiPartition(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	b := newBroker(t, c, kafka.WithTopicDefaults(broker.TopicConfig{Partitions: 2}))
	topic := "seq"
	keyA, keyB := "", ""
	for i := 0; keyA == "" || keyB == ""; i++ {
		k := "k" + strconv.Itoa(i)
		if broker.Partition(k, 2) == 0 && keyA == "" {
			keyA = k
		} else if broker.Partition(k, 2) == 1 && keyB == "" {
			keyB = k
		}
	}
	publish := func(n int, key string) {
		m := msgs(topic, n, n+1, func(int) string { return key })
		if err := b.Publish(t.Context(), m...); err != nil {
			t.Fatal(err)
		}
	}
	// 0,1 on partition 0 and 2 on partition 1, then (later) 3 on 0 and 4 on 1.
	publish(0, keyA)
	publish(1, keyA)
	publish(2, keyB)
	time.Sleep(20 * time.Millisecond) // keep the two rounds' millisecond timestamps apart
	publish(3, keyA)
	publish(4, keyB)

	// Message 3 is partition 0 offset 2: sequence 0<<48 | 3.
	sub := subscribe(t, b, topic, "from-3", func(o *broker.SubscribeOptions) { o.Start = broker.FromSequence(3) })
	got := map[int]bool{}
	for range 2 {
		d := next(t, sub, "messages from the sequence on")
		got[num(t, d)] = true
		if err := d.Ack(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if !got[3] || !got[4] {
		t.Fatalf("from sequence 3 got %v, want messages 3 and 4", got)
	}
	if _, err := b.Subscribe(t.Context(), topic, broker.SubscribeOptions{Group: "bad", Start: broker.FromSequence(5 << 48)}); err == nil {
		t.Fatal("subscribe from a sequence on partition 5 of a 2-partition topic: want an error")
	}
}
