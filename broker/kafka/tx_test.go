package kafka_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/kafka"
)

// readCommitted returns the values of the committed records of topic,
// reading until want records arrived or a quiet period passed.
func readCommitted(t *testing.T, seeds []string, topic string, want int) []string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	poll := func(d time.Duration, until int) []string {
		ctx, cancel := context.WithTimeout(t.Context(), d)
		defer cancel()
		var out []string
		for ctx.Err() == nil && len(out) < until {
			for _, r := range cl.PollFetches(ctx).Records() {
				out = append(out, string(r.Value))
			}
		}
		return out
	}
	out := poll(10*time.Second, want)
	return append(out, poll(300*time.Millisecond, 1)...) // nothing more
}

// TestTransact consumes from one topic and produces to another in
// transactions: an aborted transaction leaves no output and its delivery
// unsettled; a committed one makes the output visible and the input
// delivery settled for the group, atomically.
func TestTransact(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	b := newBroker(t, c, kafka.WithTransactionalID("herald-test-tx"))
	in, out := "tx-in", "tx-out"
	if err := b.Publish(t.Context(), msgs(in, 0, 2, nil)...); err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, b, in, "g", func(o *broker.SubscribeOptions) { o.AckWait = 500 * time.Millisecond })
	transform := func(d broker.Delivery) *broker.Message {
		return &broker.Message{Topic: out, Route: "test.out.v1", Key: d.Message().Key, Data: append([]byte("out-"), d.Message().Data...)}
	}

	// Aborted: fn fails after publishing.
	d := next(t, sub, "message 0")
	boom := errors.New("handler failed")
	err := b.Transact(t.Context(), func(tx *kafka.Tx) error {
		if err := tx.Publish(t.Context(), transform(d)); err != nil {
			return err
		}
		if err := tx.Ack(d); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("aborted transaction: got %v, want the handler's error", err)
	}
	if err := d.Nack(t.Context(), 0); err != nil {
		t.Fatalf("nack after the aborted transaction: %v", err)
	}
	d = next(t, sub, "message 0 again after the aborted transaction")
	if num(t, d) != 0 || d.Attempt() != 2 {
		t.Fatalf("got message %d attempt %d, want 0 redelivered", num(t, d), d.Attempt())
	}

	// Committed, for both messages.
	for i := range 2 {
		if i == 1 {
			d = next(t, sub, "message 1")
		}
		err := b.Transact(t.Context(), func(tx *kafka.Tx) error {
			if err := tx.Publish(t.Context(), transform(d)); err != nil {
				return err
			}
			return tx.Ack(d)
		})
		if err != nil {
			t.Fatalf("transaction %d: %v", i, err)
		}
	}
	got := readCommitted(t, c.ListenAddrs(), out, 2)
	if len(got) != 2 || got[0] != "out-0" || got[1] != "out-1" {
		t.Fatalf("committed output %q, want [out-0 out-1] (the aborted out-0 invisible)", got)
	}
	// The transaction committed the input offsets: a new member of the
	// group gets nothing, even after the old one is gone without a commit.
	kafka.Crash(sub)
	again := subscribe(t, b, in, "g", nil)
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if d, err := again.Next(ctx); err == nil {
		t.Fatalf("message %q redelivered although its transaction committed", d.Message().Data)
	}
}

// TestTransactFenced checks that a transaction acking a delivery of a
// member that has left the group fails and leaves no output.
func TestTransactFenced(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	b := newBroker(t, c)
	in, out := "fence-in", "fence-out"
	if err := b.Publish(t.Context(), msgs(in, 0, 1, nil)...); err != nil {
		t.Fatal(err)
	}
	zombie := subscribe(t, b, in, "g", nil)
	d := next(t, zombie, "message 0")
	if err := zombie.Close(); err != nil {
		t.Fatal(err)
	}
	err := b.Transact(t.Context(), func(tx *kafka.Tx) error {
		if err := tx.Publish(t.Context(), &broker.Message{Topic: out, Route: "test.out.v1", Data: []byte("zombie")}); err != nil {
			return err
		}
		return tx.Ack(d)
	})
	if !errors.Is(err, kafka.ErrPartitionRevoked) {
		t.Fatalf("transaction acking a revoked delivery: %v, want ErrPartitionRevoked", err)
	}
	if got := readCommitted(t, c.ListenAddrs(), out, 0); len(got) != 0 {
		t.Fatalf("output %q visible from a failed transaction", got)
	}
	owner := subscribe(t, b, in, "g", nil)
	if d := next(t, owner, "message 0 for the new owner"); num(t, d) != 0 {
		t.Fatalf("got %d, want 0", num(t, d))
	}
}
