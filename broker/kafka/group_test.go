package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/kafka"
)

// waitFor polls cond until it holds or the deadline passes, failing with
// what was awaited.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func msgs(topic string, from, to int, key func(int) string) []*broker.Message {
	out := make([]*broker.Message, 0, to-from)
	for i := from; i < to; i++ {
		m := &broker.Message{Topic: topic, Route: "test.item.v1", ID: topic + "-" + strconv.Itoa(i), Data: []byte(strconv.Itoa(i))}
		if key != nil {
			m.Key = key(i)
		}
		out = append(out, m)
	}
	return out
}

func next(t *testing.T, sub broker.Subscription, what string) broker.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	d, err := sub.Next(ctx)
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
	return d
}

func num(t *testing.T, d broker.Delivery) int {
	t.Helper()
	n, err := strconv.Atoi(string(d.Message().Data))
	if err != nil {
		t.Fatalf("payload %q: %v", d.Message().Data, err)
	}
	return n
}

func subscribe(t *testing.T, b *kafka.Broker, topic, group string, mod func(*broker.SubscribeOptions)) broker.Subscription {
	t.Helper()
	o := broker.SubscribeOptions{Group: group, Start: broker.FromFirst, AckWait: 5 * time.Second}
	if mod != nil {
		mod(&o)
	}
	sub, err := b.Subscribe(t.Context(), topic, o)
	if err != nil {
		t.Fatalf("subscribe %s/%s: %v", topic, group, err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return sub
}

type event struct {
	member  string
	n       int
	attempt int
}

// TestGroupRebalance runs a keyed stream through a group while a second
// member joins and the first leaves: every message arrives, no message is
// delivered twice as a first delivery, both members get a share, and each
// key's first deliveries arrive in publish order across the hand-overs.
func TestGroupRebalance(t *testing.T) {
	t.Parallel()
	const parts, keys, per = 4, 16, 600
	c := newCluster(t)
	b := newBroker(t, c, kafka.WithTopicDefaults(broker.TopicConfig{Partitions: parts}))
	topic := "rebalance"
	key := func(i int) string { return "k" + strconv.Itoa(i%keys) }

	var (
		mu  sync.Mutex
		log []event
	)
	count := func(member string) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, e := range log {
			if member == "" || e.member == member {
				n++
			}
		}
		return n
	}
	distinct := func() int {
		mu.Lock()
		defer mu.Unlock()
		seen := map[int]bool{}
		for _, e := range log {
			seen[e.n] = true
		}
		return len(seen)
	}
	var wg sync.WaitGroup
	consume := func(name string, sub broker.Subscription) {
		wg.Go(func() {
			for {
				d, err := sub.Next(t.Context())
				if err != nil {
					if !errors.Is(err, broker.ErrClosed) && t.Context().Err() == nil {
						t.Errorf("member %s: next: %v", name, err)
					}
					return
				}
				n, _ := strconv.Atoi(string(d.Message().Data))
				mu.Lock()
				log = append(log, event{member: name, n: n, attempt: d.Attempt()})
				mu.Unlock()
				if err := d.Ack(t.Context()); err != nil {
					t.Errorf("member %s: ack: %v", name, err)
				}
			}
		})
	}
	publish := func(from, to int) {
		for i := from; i < to; i += 50 {
			if err := b.Publish(t.Context(), msgs(topic, i, min(i+50, to), key)...); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
	}

	a := subscribe(t, b, topic, "workers", nil)
	consume("a", a)
	publish(0, per)
	waitFor(t, 20*time.Second, "member a to receive 200 messages", func() bool { return count("a") >= 200 })

	// The second member joins while the stream goes on: keep publishing
	// batches, each consumed before the next, until it has a share.
	bsub := subscribe(t, b, topic, "workers", nil)
	consume("b", bsub)
	sent := per
	for count("b") == 0 {
		if sent >= 40*per {
			t.Fatalf("member b received nothing after %d messages", sent)
		}
		publish(sent, sent+50)
		sent += 50
		waitFor(t, 20*time.Second, fmt.Sprintf("the first %d messages", sent), func() bool { return distinct() == sent })
	}
	publish(sent, sent+per)
	sent += per

	// The first member leaves mid-stream.
	if err := a.Close(); err != nil {
		t.Fatalf("close a: %v", err)
	}
	publish(sent, sent+per)
	sent += per
	waitFor(t, 20*time.Second, "every message", func() bool { return distinct() == sent })
	if err := bsub.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	first := map[int]int{}
	lastByKey := map[string]int{}
	shares := map[string]int{}
	for _, e := range log {
		shares[e.member]++
		if e.attempt > 1 {
			continue // a redelivery of a delivery left unsettled
		}
		first[e.n]++
		k := key(e.n)
		if prev, ok := lastByKey[k]; ok && e.n <= prev {
			t.Errorf("key %s: message %d delivered after %d", k, e.n, prev)
		}
		lastByKey[k] = e.n
	}
	for i := range sent {
		if first[i] != 1 {
			t.Errorf("message %d: %d first deliveries, want 1", i, first[i])
		}
	}
	if shares["a"] == 0 || shares["b"] == 0 {
		t.Errorf("shares %v: both members should get work", shares)
	}
}

// TestCommitOnlyAfterAck kills a member holding unacked deliveries: the
// next member gets exactly those (with their attempt count), not the ones
// acked, even those acked above an unacked one.
func TestCommitOnlyAfterAck(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	b := newBroker(t, c, kafka.WithCommitInterval(time.Hour))
	topic := "crash"
	if err := b.Publish(t.Context(), msgs(topic, 0, 20, nil)...); err != nil {
		t.Fatal(err)
	}
	confirm := func(o *broker.SubscribeOptions) { o.ConfirmAcks = true }
	dead := subscribe(t, b, topic, "g", confirm)
	var held []broker.Delivery
	for i := range 20 {
		d := next(t, dead, fmt.Sprintf("message %d", i))
		held = append(held, d)
	}
	for _, d := range held {
		n := num(t, d)
		if n < 10 && n != 5 {
			if err := d.Ack(t.Context()); err != nil {
				t.Fatalf("confirmed ack of %d: %v", n, err)
			}
		}
	}
	kafka.Crash(dead)

	alive := subscribe(t, b, topic, "g", confirm)
	want := map[int]bool{5: true}
	for i := 10; i < 20; i++ {
		want[i] = true
	}
	for len(want) > 0 {
		d := next(t, alive, fmt.Sprintf("one of the %d unacked messages", len(want)))
		n := num(t, d)
		if !want[n] {
			t.Fatalf("got message %d, which was acked (or repeated)", n)
		}
		if d.Attempt() != 2 {
			t.Errorf("message %d: attempt %d, want 2 (delivered once before the crash)", n, d.Attempt())
		}
		delete(want, n)
		if err := d.Ack(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if d, err := alive.Next(ctx); err == nil {
		t.Fatalf("unexpected delivery of %q after every unacked message", d.Message().Data)
	}
}

// TestCloseCommitsAndLeaves checks that Close commits what was acked (not
// what was only delivered) and leaves the group.
func TestCloseCommitsAndLeaves(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	b := newBroker(t, c, kafka.WithCommitInterval(time.Hour))
	topic := "close"
	if err := b.Publish(t.Context(), msgs(topic, 0, 5, nil)...); err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, b, topic, "g", nil)
	for i := range 3 {
		d := next(t, sub, "message")
		if i < 2 {
			if err := d.Ack(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(b.Client())
	offs, err := adm.FetchOffsetsForTopics(t.Context(), kafka.GroupID(topic, "g"), topic)
	if err != nil {
		t.Fatal(err)
	}
	o, ok := offs.Lookup(topic, 0)
	if !ok || o.At != 2 {
		t.Fatalf("committed offset %+v, want 2 (messages 0 and 1 acked, 2 delivered only)", o)
	}
	if !strings.HasPrefix(o.Metadata, "h1") || !strings.Contains(o.Metadata, "a0:1") {
		t.Errorf("commit metadata %q should record message 2's delivery (a0:1)", o.Metadata)
	}
	groups, err := adm.DescribeGroups(t.Context(), kafka.GroupID(topic, "g"))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		if len(g.Members) != 0 {
			t.Errorf("group %s still has members %v after Close", g.Group, g.Members)
		}
	}
}

// TestRouteFilterCommits checks that records filtered out by route are
// settled and committed, so the group does not fetch them again.
func TestRouteFilterCommits(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	b := newBroker(t, c)
	topic := "routes"
	other := msgs(topic, 0, 3, nil)
	for _, m := range other {
		m.Route = "test.other.v1"
	}
	if err := b.Publish(t.Context(), other...); err != nil {
		t.Fatal(err)
	}
	wanted := msgs(topic, 3, 4, nil)
	if err := b.Publish(t.Context(), wanted...); err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, b, topic, "g", func(o *broker.SubscribeOptions) {
		o.Routes = []string{"test.item.v1"}
		o.ConfirmAcks = true
	})
	d := next(t, sub, "the one message with the subscribed route")
	if num(t, d) != 3 {
		t.Fatalf("got message %d, want 3", num(t, d))
	}
	if err := d.Ack(t.Context()); err != nil {
		t.Fatal(err)
	}
	offs, err := kadm.NewClient(b.Client()).FetchOffsetsForTopics(t.Context(), kafka.GroupID(topic, "g"), topic)
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := offs.Lookup(topic, 0); o.At != 4 {
		t.Fatalf("committed offset %d after a confirmed ack, want 4 (three filtered, one acked); metadata %q", o.At, o.Metadata)
	}
}

// TestConfirmedAckAfterClose checks that a confirmed ack that can no
// longer be committed says so.
func TestConfirmedAckAfterClose(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	b := newBroker(t, c)
	topic := "late-ack"
	if err := b.Publish(t.Context(), msgs(topic, 0, 1, nil)...); err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, b, topic, "g", func(o *broker.SubscribeOptions) { o.ConfirmAcks = true })
	d := next(t, sub, "message 0")
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Ack(t.Context()); !errors.Is(err, kafka.ErrPartitionRevoked) {
		t.Fatalf("confirmed ack after Close: %v, want ErrPartitionRevoked", err)
	}
	if _, err := sub.Next(t.Context()); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Next after Close: %v, want ErrClosed", err)
	}
}
