package rabbitmq

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/heraldhq/herald/broker"
)

// TestPartitionedKeyOrder runs three members of one group on a topic with
// four partitions: per-key order holds across members, also when the
// member active on the partitions leaves half way.
func TestPartitionedKeyOrder(t *testing.T) {
	t.Parallel()
	b := newTestBroker(t)
	topic := uniq("keyorder")
	if err := b.EnsureTopic(t.Context(), topic, broker.TopicConfig{Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	const keys, perKey = 100, 20
	const n = keys * perKey
	subs := make([]broker.Subscription, 3)
	for i := range subs {
		s, err := b.Subscribe(t.Context(), topic, broker.SubscribeOptions{Group: "workers", MaxInFlight: 64})
		if err != nil {
			t.Fatalf("subscribe member %d: %v", i, err)
		}
		subs[i] = s
		t.Cleanup(func() { _ = s.Close() })
	}
	msgs := make([]*broker.Message, 0, n)
	for i := range perKey {
		for k := range keys {
			msgs = append(msgs, &broker.Message{Topic: topic, Route: "order.v1", Key: "key-" + strconv.Itoa(k), Data: []byte(strconv.Itoa(i*keys + k))})
		}
	}
	if err := b.Publish(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	last := map[int]int{} // key -> last index received
	per := make([]int, len(subs))
	got := 0
	var orderErr error
	var wg sync.WaitGroup
	for m, sub := range subs {
		wg.Go(func() {
			for {
				d, err := sub.Next(ctx)
				if err != nil {
					return
				}
				v, _ := strconv.Atoi(string(d.Message().Data))
				k, i := v%keys, v/keys
				mu.Lock()
				prev, seen := last[k]
				switch {
				case seen && i <= prev && d.Attempt() == 1:
					orderErr = errors.New("key " + strconv.Itoa(k) + ": message " + strconv.Itoa(i) + " after " + strconv.Itoa(prev))
				case !seen || i > prev:
					last[k] = i
					got++
					per[m]++
				}
				done := got == n
				leave := per[m] == n/2
				mu.Unlock()
				if err := d.Ack(ctx); err != nil {
					t.Errorf("ack: %v", err)
				}
				if done {
					cancel()
				}
				if leave {
					// The active member leaves from its own loop, after
					// settling what it took: the partitions fail over.
					_ = sub.Close()
					return
				}
			}
		})
	}
	wg.Wait()
	if orderErr != nil {
		t.Fatal(orderErr)
	}
	if got != n {
		t.Fatalf("received %d of %d messages in order (per member %v)", got, n, per)
	}
	active := 0
	for _, c := range per {
		if c > 0 {
			active++
		}
	}
	if active < 2 {
		t.Fatalf("per member %v: after the first member left, another should have taken over", per)
	}
	t.Logf("messages per member: %v", per)
}

// rawGet reads one message from queue q with a plain client.
func rawGet(t *testing.T, q string) (amqp.Delivery, bool) {
	t.Helper()
	c, err := amqp.Dial(testURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, ok, err := ch.Get(q, true)
		if err != nil {
			t.Fatalf("get from %q: %v", q, err)
		}
		if ok || time.Now().After(deadline) {
			return d, ok
		}
		time.Sleep(20 * time.Millisecond) // polling a queue: basic.get has no wait
	}
}

func subscribe(t *testing.T, b broker.Subscriber, topic string, o broker.SubscribeOptions) broker.Subscription {
	t.Helper()
	s, err := b.Subscribe(t.Context(), topic, o)
	if err != nil {
		t.Fatalf("subscribe %s/%s: %v", topic, o.Group, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func next(t *testing.T, s broker.Subscription, what string) broker.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	d, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
	return d
}

// TestTermDeadLetters checks that Term and the delivery limit move a
// message to the group's dead-letter queue.
func TestTermDeadLetters(t *testing.T) {
	t.Parallel()
	b := newTestBroker(t, WithDeliveryLimit(2))
	topic := uniq("dlq")
	sub := subscribe(t, b, topic, broker.SubscribeOptions{Group: "g"})
	if err := b.Publish(t.Context(),
		&broker.Message{Topic: topic, Route: "r", ID: "poison", Data: []byte("poison")},
		&broker.Message{Topic: topic, Route: "r", ID: "flaky", Data: []byte("flaky")},
	); err != nil {
		t.Fatal(err)
	}
	if err := next(t, sub, "the poison message").Term(t.Context(), "cannot decode"); err != nil {
		t.Fatal(err)
	}
	dlq := dlqName(groupQueue(topic, "g"))
	d, ok := rawGet(t, dlq)
	if !ok || d.MessageId != "poison" {
		t.Fatalf("dead-letter queue %s: got %q (found %v), want the terminated message", dlq, d.MessageId, ok)
	}
	// Delivery limit 2: the second failed attempt dead-letters, whether
	// the retry was immediate or delayed.
	f := next(t, sub, "flaky, attempt 1")
	if err := f.Nack(t.Context(), 30*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	f = next(t, sub, "flaky, attempt 2")
	if f.Attempt() != 2 || f.Message().ID != "flaky" {
		t.Fatalf("got %s attempt %d, want flaky attempt 2", f.Message().ID, f.Attempt())
	}
	if err := f.Nack(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	d, ok = rawGet(t, dlq)
	if !ok || d.MessageId != "flaky" {
		t.Fatalf("dead-letter queue: got %q (found %v), want the message over the delivery limit", d.MessageId, ok)
	}
}

// TestContentType checks the mapping of the content-type header to the
// AMQP property, both ways, as the CloudEvents AMQP binding expects.
func TestContentType(t *testing.T) {
	t.Parallel()
	b := newTestBroker(t)
	topic := uniq("ct")
	// A group with no consumer keeps the message for the raw reader.
	sub := subscribe(t, b, topic, broker.SubscribeOptions{Group: "raw"})
	_ = sub.Close()
	if err := b.Publish(t.Context(), &broker.Message{Topic: topic, Route: "r", Header: map[string]string{
		"content-type": "application/json", "cloudEvents_type": "shop.order.placed.v1",
	}, Data: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	d, ok := rawGet(t, groupQueue(topic, "raw"))
	if !ok {
		t.Fatal("raw reader got nothing")
	}
	if d.ContentType != "application/json" {
		t.Errorf("AMQP content-type property = %q, want application/json", d.ContentType)
	}
	if _, in := d.Headers["content-type"]; in {
		t.Errorf("content-type also sent as a header: %v", d.Headers)
	}
	if d.Headers["cloudEvents_type"] != "shop.order.placed.v1" {
		t.Errorf("header cloudEvents_type = %v", d.Headers["cloudEvents_type"])
	}

	// A message from a plain AMQP producer: property back to the header.
	s2 := subscribe(t, b, topic, broker.SubscribeOptions{Group: "herald"})
	c, err := amqp.Dial(testURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish(exchangeName(topic), "plain.v1", false, false, amqp.Publishing{
		ContentType: "text/plain", MessageId: "m1", Headers: amqp.Table{"n": int32(7)}, Body: []byte("hi"),
	}); err != nil {
		t.Fatal(err)
	}
	got := next(t, s2, "the plain AMQP message").Message()
	if got.Header["content-type"] != "text/plain" || got.Header["n"] != "7" || got.ID != "m1" || got.Route != "plain.v1" {
		t.Fatalf("got header %v id %q route %q, want content-type text/plain, n=7, id m1, route plain.v1", got.Header, got.ID, got.Route)
	}
}

// TestUnroutable: without the topic log, a message no group takes is an
// error, and groups cannot start in the past.
func TestUnroutable(t *testing.T) {
	t.Parallel()
	b := newTestBroker(t, WithTopicLog(false))
	topic := uniq("unroutable")
	err := b.Publish(t.Context(), &broker.Message{Topic: topic, Route: "nobody.v1", Data: []byte("x")})
	var pe *broker.PublishError
	if !errors.As(err, &pe) || !errors.Is(pe.Failed(0), ErrUnroutable) {
		t.Fatalf("publish with no group: %v, want a PublishError with ErrUnroutable", err)
	}
	_ = subscribe(t, b, topic, broker.SubscribeOptions{Group: "only-a", Routes: []string{"a.v1"}})
	err = b.Publish(t.Context(),
		&broker.Message{Topic: topic, Route: "a.v1", Data: []byte("a")},
		&broker.Message{Topic: topic, Route: "b.v1", Data: []byte("b")})
	if !errors.As(err, &pe) || pe.Failed(0) != nil || !errors.Is(pe.Failed(1), ErrUnroutable) {
		t.Fatalf("publish a.v1 and b.v1 with a group on a.v1: %v, want only the second unroutable", err)
	}
	if _, err := b.Subscribe(t.Context(), topic, broker.SubscribeOptions{Group: "past", Start: broker.FromFirst}); err == nil {
		t.Fatal("StartFirst without the topic log succeeded, want an error")
	}
}

// TestSubscribeInvalid checks option validation.
func TestSubscribeInvalid(t *testing.T) {
	t.Parallel()
	b := newTestBroker(t)
	cases := map[string]struct {
		topic string
		o     broker.SubscribeOptions
	}{
		"wildcard route": {"t", broker.SubscribeOptions{Group: "g", Routes: []string{"a.#"}}},
		"bad route":      {"t", broker.SubscribeOptions{Group: "g", Routes: []string{"a b"}}},
		"bad topic":      {"a/b", broker.SubscribeOptions{Group: "g"}},
		"no group":       {"t", broker.SubscribeOptions{}},
		"seq zero":       {"t", broker.SubscribeOptions{Group: "g", Start: broker.Start{Kind: broker.StartSequence}}},
	}
	for name, tc := range cases {
		if _, err := b.Subscribe(t.Context(), tc.topic, tc.o); err == nil {
			t.Errorf("%s: Subscribe succeeded, want an error", name)
		}
	}
	if err := b.EnsureTopic(t.Context(), "t", broker.TopicConfig{Partitions: 3}); err == nil {
		t.Error("EnsureTopic with 3 partitions succeeded, want an error (1, 2, 4, 8 or 16)")
	}
	err := b.Publish(t.Context(), &broker.Message{Topic: "t", Route: "r", Header: map[string]string{"herald-key": "x"}})
	if !errors.Is(err, broker.ErrInvalidMessage) {
		t.Errorf("publish with a reserved header: %v, want ErrInvalidMessage", err)
	}
}

func TestDelayTier(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in   time.Duration
		want int64
	}{
		{time.Microsecond, 1},
		{16 * time.Millisecond, 16},
		{17 * time.Millisecond, 18},
		{700 * time.Millisecond, 704},
		{time.Second, 1024},
		{5 * time.Minute, 327680},
	}
	for _, tc := range cases {
		got := delayTier(tc.in)
		if got != tc.want {
			t.Errorf("delayTier(%v) = %d, want %d", tc.in, got, tc.want)
		}
		if time.Duration(got)*time.Millisecond < tc.in || float64(got) > 1.125*float64(tc.in.Milliseconds())+1 {
			t.Errorf("delayTier(%v) = %dms: outside [d, 1.125d]", tc.in, got)
		}
	}
}
