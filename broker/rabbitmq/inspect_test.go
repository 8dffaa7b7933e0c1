package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
)

func waitState(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 30s for %s; last state: %s", what, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestInspect lists topics and groups through the catalog, reads the
// topic log from a sequence, moves an existing group back and creates one
// at a sequence, refuses to move a group with a consumer, and forgets a
// deleted group.
func TestInspect(t *testing.T) {
	t.Parallel()
	b := newTestBroker(t)
	topic := uniq("inspect")
	sub, err := b.Subscribe(t.Context(), topic, broker.SubscribeOptions{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	var ms []*broker.Message
	for i := range 6 {
		ms = append(ms, &broker.Message{Topic: topic, Route: "test.item.v1", Data: []byte(strconv.Itoa(i))})
	}
	if err := b.Publish(t.Context(), ms...); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		d, err := sub.Next(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Ack(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	pending := func(group string, want uint64) {
		t.Helper()
		waitState(t, fmt.Sprintf("group %s with %d pending", group, want), func() (bool, string) {
			gs, err := b.GroupStates(t.Context(), topic)
			if err != nil {
				return false, err.Error()
			}
			for _, g := range gs {
				if g.Group == group {
					return g.Topic == topic && g.Pending == want && g.Members == 0, fmt.Sprintf("%+v", gs)
				}
			}
			return false, fmt.Sprintf("%+v", gs)
		})
	}
	pending("g", 4)

	ts, err := b.TopicStates(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range ts {
		found = found || s.Topic == topic
	}
	if !found {
		t.Fatalf("topic %s not among %d topics listed", topic, len(ts))
	}

	var seqs []uint64
	var data []string
	if err := b.ReadTopic(t.Context(), topic, 4, func(m *broker.StoredMessage) bool {
		seqs, data = append(seqs, m.Seq), append(data, string(m.Data))
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seqs, data) != "[5 6] [4 5]" {
		t.Fatalf("read after sequence 4: sequences %v data %v, want [5 6] [4 5]", seqs, data)
	}

	if _, err := b.MoveGroup(t.Context(), topic, "g", broker.FromFirst, false); err != nil {
		t.Fatal(err)
	}
	pending("g", 6)
	b.note(topic, "g2") // for cleanup
	if seq, err := b.MoveGroup(t.Context(), topic, "g2", broker.FromSequence(5), true); err != nil || seq != 5 {
		t.Fatalf("create group at sequence 5: %d, %v", seq, err)
	}
	pending("g2", 2)
	if _, err := b.MoveGroup(t.Context(), topic, "g2", broker.FromFirst, true); !errors.Is(err, broker.ErrGroupExists) {
		t.Fatalf("create an existing group: %v, want ErrGroupExists", err)
	}

	busy, err := b.Subscribe(t.Context(), topic, broker.SubscribeOptions{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	waitState(t, "a move of a consumed group refused", func() (bool, string) {
		_, err := b.MoveGroup(t.Context(), topic, "g", broker.FromFirst, false)
		return errors.Is(err, broker.ErrGroupBusy), fmt.Sprint(err)
	})

	if err := b.DeleteGroup(t.Context(), topic, "g2"); err != nil {
		t.Fatal(err)
	}
	cat, err := b.catalog(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !cat[topic]["g"] || cat[topic]["g2"] {
		t.Fatalf("catalog of %s: %v, want g and not the deleted g2", topic, cat[topic])
	}
}
