package rabbitmq

import (
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/heraldhq/herald/broker"
)

// queueExists looks q up on a connection of its own.
func queueExists(t *testing.T, url, q string) bool {
	t.Helper()
	c, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}
	defer ch.Close()
	_, err = ch.QueueDeclarePassive(q, true, false, false, false, nil)
	if err != nil && !isNotFound(err) {
		t.Fatalf("look up queue %q: %v", q, err)
	}
	return err == nil
}

func TestDeleteGroup(t *testing.T) {
	t.Parallel()
	for _, parts := range []int{1, 4} {
		t.Run("partitions="+strconv.Itoa(parts), func(t *testing.T) {
			t.Parallel()
			b := newTestBroker(t)
			url := testURL(t)
			topic := "delgroup-" + strconv.Itoa(parts) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
			if err := b.EnsureTopic(t.Context(), topic, broker.TopicConfig{Partitions: parts}); err != nil {
				t.Fatal(err)
			}
			for _, g := range []string{"gone", "kept"} {
				sub, err := b.Subscribe(t.Context(), topic, broker.SubscribeOptions{Group: g})
				if err != nil {
					t.Fatal(err)
				}
				_ = sub.Close()
			}
			if err := b.Publish(t.Context(), &broker.Message{Topic: topic, Route: "r", Key: "k", Data: []byte("x")}); err != nil {
				t.Fatal(err)
			}
			gone, kept := groupQueue(topic, "gone"), groupQueue(topic, "kept")
			first := func(gq string) string {
				if parts == 1 {
					return gq
				}
				return partitionQueue(gq, 0)
			}
			if !queueExists(t, url, first(gone)) || !queueExists(t, url, dlqName(gone)) {
				t.Fatalf("the group's queues %s and %s were not declared", first(gone), dlqName(gone))
			}
			if err := b.DeleteGroup(t.Context(), topic, "gone"); err != nil {
				t.Fatalf("DeleteGroup: %v", err)
			}
			for _, q := range []string{gone, dlqName(gone), partitionQueue(gone, 0), partitionQueue(gone, parts-1)} {
				if queueExists(t, url, q) {
					t.Errorf("queue %s still exists after DeleteGroup", q)
				}
			}
			if !queueExists(t, url, first(kept)) || !queueExists(t, url, dlqName(kept)) {
				t.Errorf("DeleteGroup of another group removed %s or its dead-letter queue", first(kept))
			}
			if err := b.DeleteGroup(t.Context(), topic, "gone"); err != nil {
				t.Errorf("DeleteGroup of a deleted group: %v, want nil", err)
			}
			if err := b.DeleteGroup(t.Context(), topic, "bad/name"); err == nil {
				t.Error("DeleteGroup accepted the group name bad/name")
			}
		})
	}
}
