package kafka_test

import (
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/broker"
)

// TestInspect reads what the operations tools need from the cluster: the
// topics (not the retry topics), the lag of a Herald group and of a group
// of another client (as kafka-python's "payment-service" commits offsets),
// the messages of a topic from a sequence on, and a group move that Kafka
// refuses while the group has a member.
func TestInspect(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	b := newBroker(t, c)
	const topic = "payments"
	if err := b.Publish(t.Context(), msgs(topic, 0, 10, nil)...); err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, b, topic, "billing", nil)
	for range 4 {
		if err := next(t, sub, "a payment").Ack(t.Context()); err != nil {
			t.Fatal(err)
		}
	}

	// A client that does not use Herald commits offset 7 for its group.
	raw, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	offs := make(kadm.Offsets)
	offs.Add(kadm.Offset{Topic: topic, Partition: 0, At: 7, LeaderEpoch: -1})
	if resp, err := kadm.NewClient(raw).CommitOffsets(t.Context(), "payment-service", offs); err != nil || resp.Error() != nil {
		t.Fatalf("commit of the foreign group: %v %v", err, resp.Error())
	}

	ts, err := b.TopicStates(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 1 || ts[0].Topic != topic || ts[0].Messages != 10 || ts[0].FirstSeq != 1 || ts[0].LastSeq != 10 {
		t.Fatalf("topics %+v, want %s alone (no retry topic) with 10 messages, sequences 1..10", ts, topic)
	}

	waitFor(t, 20*time.Second, "billing's acks committed and both groups listed", func() bool {
		gs, err := b.GroupStates(t.Context(), topic)
		if err != nil {
			t.Fatal(err)
		}
		var billing, foreign *broker.GroupState
		for i := range gs {
			switch gs[i].Group {
			case "billing":
				billing = &gs[i]
			case "payment-service":
				foreign = &gs[i]
			}
		}
		return len(gs) == 2 && billing != nil && !billing.Foreign && billing.Pending == 6 && billing.Members == 1 &&
			foreign != nil && foreign.Foreign && foreign.Pending == 3 && foreign.Members == 0
	})

	var got []uint64
	if err := b.ReadTopic(t.Context(), topic, 7, func(m *broker.StoredMessage) bool {
		got = append(got, m.Seq)
		return string(m.Data) == "7" || string(m.Data) == "8"
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0] != 8 || got[2] != 10 {
		t.Fatalf("read from after sequence 7 until fn said stop: %v, want [8 9 10]", got)
	}

	if _, err := b.MoveGroup(t.Context(), topic, "billing", broker.FromFirst, false); !errors.Is(err, broker.ErrGroupBusy) {
		t.Fatalf("move of a group with a member: %v, want ErrGroupBusy", err)
	}
	if _, err := b.MoveGroup(t.Context(), topic, "billing", broker.FromFirst, true); !errors.Is(err, broker.ErrGroupExists) {
		t.Fatalf("create of an existing group: %v, want ErrGroupExists", err)
	}
	seq, err := b.MoveGroup(t.Context(), topic, "audit", broker.FromSequence(9), true)
	if err != nil || seq != 9 {
		t.Fatalf("create group at sequence 9: %d, %v", seq, err)
	}
	replayed := subscribe(t, b, topic, "audit", nil)
	if d := next(t, replayed, "the first message of the new group"); num(t, d) != 8 {
		t.Fatalf("new group starts at message %d, want 8 (sequence 9)", num(t, d))
	}
}

// TestReadMissingTopic reads a topic that does not exist (a dead-letter
// topic before the first dead letter): ErrInvalidTopic, which the
// operations tools take for "empty", not a broker failure.
func TestReadMissingTopic(t *testing.T) {
	t.Parallel()
	b := newBroker(t, newCluster(t))
	err := b.ReadTopic(t.Context(), "nothing.dlq", 0, func(*broker.StoredMessage) bool { return true })
	if !errors.Is(err, broker.ErrInvalidTopic) || errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("ReadTopic of a missing topic: %v, want ErrInvalidTopic", err)
	}
}
