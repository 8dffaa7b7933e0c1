package natsjs_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	"github.com/heraldhq/herald/broker/natsjs"
)

func TestConformanceGroupCommit(t *testing.T) {
	e := embedded(t, natsjs.EmbeddedConfig{Durability: natsjs.Sync})
	brokertest.Run(t, func(t *testing.T) broker.Broker {
		return newBroker(t, natsjs.WithEmbedded(e))
	}, brokertest.Features{})
}

func TestConformanceFastBatches(t *testing.T) {
	e := embedded(t, natsjs.EmbeddedConfig{Durability: natsjs.Fast})
	brokertest.Run(t, func(t *testing.T) broker.Broker {
		return newBroker(t, natsjs.WithEmbedded(e), natsjs.WithGroupCommit(true))
	}, brokertest.Features{})
}

// storedCount polls until the stream of topic holds want messages.
func storedCount(t *testing.T, js jetstream.JetStream, topic string, want uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var have uint64
	for time.Now().Before(deadline) {
		s, err := js.Stream(t.Context(), natsjs.StreamName(topic))
		if err == nil {
			info, err := s.Info(t.Context())
			if err == nil {
				if have = info.State.Msgs; have == want {
					return
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("stream of %q holds %d messages after 20s, want %d", topic, have, want)
}

// TestGroupCommitConcurrentPublishers publishes from many goroutines at
// once, with Sync durability (atomic batches) and Fast (fast batches):
// every message is stored once, each publisher's messages of a key keep
// their order, and the commits share batches.
func TestGroupCommitConcurrentPublishers(t *testing.T) {
	t.Parallel()
	for _, d := range []natsjs.Durability{natsjs.Sync, natsjs.Fast} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			e := embedded(t, natsjs.EmbeddedConfig{Durability: d})
			testGroupCommitConcurrent(t, newBroker(t, natsjs.WithEmbedded(e), natsjs.WithGroupCommit(true), natsjs.WithTopicDefaults(broker.TopicConfig{Partitions: 2})))
		})
	}
	// Over the network, group commit is on by default where the server
	// says it fsyncs (as herald serve --durability sync does), and off
	// where it says nothing.
	t.Run("sync over the network", func(t *testing.T) {
		t.Parallel()
		e := embedded(t, natsjs.EmbeddedConfig{Durability: natsjs.Sync, Addr: "127.0.0.1:0"})
		plain := newBroker(t, natsjs.WithURL(e.ClientURL()))
		if plain.GroupCommit() {
			t.Fatal("group commit on against a server that does not say its durability")
		}
		if _, err := natsjs.AnswerServerInfo(newBroker(t, natsjs.WithEmbedded(e)).Conn(), natsjs.ServerInfo{Durability: natsjs.Sync}); err != nil {
			t.Fatal(err)
		}
		b := newBroker(t, natsjs.WithURL(e.ClientURL()), natsjs.WithTopicDefaults(broker.TopicConfig{Partitions: 2}))
		if !b.GroupCommit() {
			t.Fatal("group commit off against a server that says it fsyncs")
		}
		testGroupCommitConcurrent(t, b)
	})
}

func testGroupCommitConcurrent(t *testing.T, b *natsjs.Broker) {
	topic := "gc_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	const publishers, calls, perCall = 16, 20, 5
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for p := range publishers {
		wg.Go(func() {
			for c := range calls {
				msgs := make([]*broker.Message, perCall)
				for i := range msgs {
					n := c*perCall + i
					msgs[i] = &broker.Message{Topic: topic, Route: "t.v1", Key: "p" + strconv.Itoa(p),
						ID: fmt.Sprintf("%d-%d", p, n), Header: map[string]string{"ce-type": "t.v1"}, Data: []byte(strconv.Itoa(n))}
				}
				if err := b.Publish(t.Context(), msgs...); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := publishers * calls * perCall
	storedCount(t, b.JetStream(), topic, uint64(total))
	if n := natsjs.CommittedBatches(b); n == 0 {
		t.Fatalf("none of %d messages published by %d concurrent publishers went in a batch", total, publishers)
	} else {
		t.Logf("%d batches for %d messages", n, total)
	}

	sub, err := b.Subscribe(t.Context(), topic, broker.SubscribeOptions{Group: "g", Start: broker.FromFirst})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	next := map[string]int{}
	for range total {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		d, err := sub.Next(ctx)
		cancel()
		if err != nil {
			t.Fatalf("waiting for the next of %d messages: %v", total, err)
		}
		m := d.Message()
		n, _ := strconv.Atoi(string(m.Data))
		if n != next[m.Key] {
			t.Fatalf("key %s: got message %d, want %d (order broken)", m.Key, n, next[m.Key])
		}
		next[m.Key]++
		for k := range m.Header {
			if k != "ce-type" {
				t.Fatalf("delivery carries header %q besides the message's own: %v", k, m.Header)
			}
		}
		if err := d.Ack(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestGroupCommitDuplicateFallsBack: a batch holding an id the stream
// already stored is refused by the server (atomic batches) or stopped at
// it (fast batches, when it is the first); the committer sends the rest
// one by one, so the new messages are stored and the duplicate is
// confirmed without being stored twice.
func TestGroupCommitDuplicateFallsBack(t *testing.T) {
	t.Parallel()
	for _, d := range []natsjs.Durability{natsjs.Sync, natsjs.Fast} {
		for name, ids := range map[string][]string{
			"first":  {"a", "b", "c", "c"},
			"middle": {"b", "a", "c", "c"},
			"last":   {"b", "c", "a"},
		} {
			t.Run(string(d)+"/"+name, func(t *testing.T) {
				t.Parallel()
				e := embedded(t, natsjs.EmbeddedConfig{Durability: d})
				b := newBroker(t, natsjs.WithEmbedded(e), natsjs.WithGroupCommit(true))
				topic := "gcdup_" + strconv.FormatInt(time.Now().UnixNano(), 36)
				msg := func(id string) *broker.Message {
					return &broker.Message{Topic: topic, Route: "t.v1", ID: id, Data: []byte(id)}
				}
				if err := b.Publish(t.Context(), msg("a")); err != nil {
					t.Fatal(err)
				}
				msgs := make([]*broker.Message, len(ids))
				for i, id := range ids {
					msgs[i] = msg(id)
				}
				if err := b.Publish(t.Context(), msgs...); err != nil {
					t.Fatalf("publish with duplicates: %v", err)
				}
				storedCount(t, b.JetStream(), topic, 3)
			})
		}
	}
}

// TestGroupCommitRefusedMessage: the server refuses one message of a
// batch (its expected stream is wrong); that message alone fails, the
// others are stored once and in order.
func TestGroupCommitRefusedMessage(t *testing.T) {
	t.Parallel()
	for _, d := range []natsjs.Durability{natsjs.Sync, natsjs.Fast} {
		for _, bad := range []int{0, 2, 4} {
			t.Run(fmt.Sprintf("%s/%d", d, bad), func(t *testing.T) {
				t.Parallel()
				e := embedded(t, natsjs.EmbeddedConfig{Durability: d})
				b := newBroker(t, natsjs.WithEmbedded(e), natsjs.WithGroupCommit(true))
				topic := "gcbad_" + strconv.FormatInt(time.Now().UnixNano(), 36)
				// The first publish to a new stream goes alone: have it done.
				if err := b.Publish(t.Context(), &broker.Message{Topic: topic, Route: "t.v1", ID: "w", Data: []byte("w")}); err != nil {
					t.Fatal(err)
				}
				msgs := make([]*broker.Message, 5)
				for i := range msgs {
					msgs[i] = &broker.Message{Topic: topic, Route: "t.v1", Key: "k", ID: strconv.Itoa(i), Data: []byte(strconv.Itoa(i))}
				}
				msgs[bad].Header = map[string]string{"Nats-Expected-Stream": "not-this-one"}
				err := b.Publish(t.Context(), msgs...)
				var pe *broker.PublishError
				if !errors.As(err, &pe) {
					t.Fatalf("publish: %v, want a *broker.PublishError", err)
				}
				for i, e := range pe.Errs {
					if (e != nil) != (i == bad) {
						t.Fatalf("message %d: error %v (the refused one is %d)", i, e, bad)
					}
				}
				storedCount(t, b.JetStream(), topic, 5)
				stream, err := b.JetStream().Stream(t.Context(), natsjs.StreamName(topic))
				if err != nil {
					t.Fatal(err)
				}
				want := 0
				for seq := uint64(2); seq <= 5; seq++ {
					if want == bad {
						want++
					}
					raw, err := stream.GetMsg(t.Context(), seq)
					if err != nil {
						t.Fatal(err)
					}
					if string(raw.Data) != strconv.Itoa(want) {
						t.Fatalf("message %d holds %q, want %d", seq, raw.Data, want)
					}
					want++
				}
			})
		}
	}
}

// TestGroupCommitClose: Publish after Close fails with ErrClosed.
func TestGroupCommitClose(t *testing.T) {
	t.Parallel()
	e := embedded(t, natsjs.EmbeddedConfig{Durability: natsjs.Sync})
	b := newBroker(t, natsjs.WithEmbedded(e))
	topic := "gcclose_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	m := &broker.Message{Topic: topic, Route: "t.v1", ID: "x", Data: []byte("x")}
	if err := b.Publish(t.Context(), m, m); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(t.Context(), m, m); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("publish after close: %v, want ErrClosed", err)
	}
}

// TestPublishRecreatesVanishedStream: the topic's stream disappears behind
// the broker's back (deleted elsewhere, or lost in a power cut). The
// publishes that nobody answers fail within the publish timeout, batch
// and all, and a later publish creates the stream again and is stored.
func TestPublishRecreatesVanishedStream(t *testing.T) {
	t.Parallel()
	for _, gc := range []bool{true, false} {
		t.Run(fmt.Sprintf("group-commit=%v", gc), func(t *testing.T) {
			t.Parallel()
			e := embedded(t, natsjs.EmbeddedConfig{Durability: natsjs.Sync})
			const wait = 500 * time.Millisecond
			b := newBroker(t, natsjs.WithEmbedded(e), natsjs.WithGroupCommit(gc), natsjs.WithPublishTimeout(wait))
			// Two topics in each call: both streams vanish, and each must
			// be looked up and created again, not only the first one.
			id := strconv.FormatInt(time.Now().UnixNano(), 36)
			topics := []string{"gone_a_" + id, "gone_b_" + id}
			for _, topic := range topics {
				if err := b.Publish(t.Context(), &broker.Message{Topic: topic, Route: "t.v1", ID: "first", Data: []byte("1")}); err != nil {
					t.Fatal(err)
				}
				if err := b.JetStream().DeleteStream(t.Context(), natsjs.StreamName(topic)); err != nil {
					t.Fatal(err)
				}
			}
			batch := func(prefix string) []*broker.Message {
				ms := make([]*broker.Message, 50)
				for i := range ms {
					ms[i] = &broker.Message{Topic: topics[i*len(topics)/len(ms)], Route: "t.v1", Key: "k", ID: prefix + strconv.Itoa(i), Data: []byte("x")}
				}
				return ms
			}
			began := time.Now()
			if err := b.Publish(t.Context(), batch("lost")...); err == nil {
				t.Fatal("a publish to a deleted stream was confirmed")
			}
			// One timeout for the whole call and the checks after it, not
			// one per message (50 × 500 ms).
			if d := time.Since(began); d > 10*wait {
				t.Fatalf("the publish into a deleted stream took %s; the publish timeout is %s", d, wait)
			}
			if err := b.Publish(t.Context(), batch("again")...); err != nil {
				t.Fatalf("the publish after the failed one did not create the streams again: %v", err)
			}
			for _, topic := range topics {
				storedCount(t, b.JetStream(), topic, 25)
			}
		})
	}
}
