package kafka_test

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/kafka"
)

func TestDeleteGroup(t *testing.T) {
	t.Parallel()
	b := newBroker(t, newCluster(t))
	const topic = "orders"
	if err := b.Publish(t.Context(), &broker.Message{Topic: topic, Route: "r", Key: "k", Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{"gone", "kept"} {
		sub, err := b.Subscribe(t.Context(), topic, broker.SubscribeOptions{Group: g, Start: broker.FromFirst, ConfirmAcks: true})
		if err != nil {
			t.Fatal(err)
		}
		d, err := sub.Next(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Ack(t.Context()); err != nil {
			t.Fatal(err)
		}
		_ = sub.Close()
	}
	adm := kadm.NewClient(b.Client())
	groups := func() map[string]bool {
		t.Helper()
		ls, err := adm.ListGroups(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, g := range ls.Groups() {
			out[g] = true
		}
		return out
	}
	topics := func() map[string]bool {
		t.Helper()
		tds, err := adm.ListTopics(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, n := range tds.Names() {
			out[n] = true
		}
		return out
	}
	if !groups()[kafka.GroupID(topic, "gone")] || !topics()[kafka.RetryTopic(topic, "gone")] {
		t.Fatalf("before DeleteGroup: groups %v, topics %v: want the group and its retry topic", groups(), topics())
	}
	if err := b.DeleteGroup(t.Context(), topic, "gone"); err != nil {
		t.Fatalf("DeleteGroup: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for groups()[kafka.GroupID(topic, "gone")] || topics()[kafka.RetryTopic(topic, "gone")] {
		if time.Now().After(deadline) {
			t.Fatalf("after DeleteGroup: groups %v, topics %v still hold the group or its retry topic", groups(), topics())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !groups()[kafka.GroupID(topic, "kept")] || !topics()[kafka.RetryTopic(topic, "kept")] || !topics()[topic] {
		t.Errorf("DeleteGroup removed more than its group: groups %v, topics %v", groups(), topics())
	}
	if err := b.DeleteGroup(t.Context(), topic, "gone"); err != nil {
		t.Errorf("DeleteGroup of a deleted group: %v, want nil", err)
	}
	if err := b.DeleteGroup(t.Context(), topic, "bad/name"); err == nil {
		t.Error("DeleteGroup accepted the group name bad/name")
	}
}
