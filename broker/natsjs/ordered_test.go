package natsjs_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
)

// TestCrashTakeoverKeepsStreamOrder kills the owner of a key-ordered
// partition after it extended the ack wait of its first delivery but not of
// the later ones, so on the server the later ones are due first. The member
// that takes the partition over still gets the events in stream order, also
// when its first resets of the partition's consumer fail: it must not
// consume before a reset went through.
func TestCrashTakeoverKeepsStreamOrder(t *testing.T) {
	t.Parallel()
	for name, failResets := range map[string]int32{"reset": 0, "first resets fail": 3} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			crashTakeover(t, failResets)
		})
	}
}

func crashTakeover(t *testing.T, failResets int32) {
	e := embedded(t, natsjs.EmbeddedConfig{})
	ctx := t.Context()
	const topic = "takeover"
	owner := newBroker(t, natsjs.WithEmbedded(e), natsjs.WithTopicDefaults(broker.TopicConfig{Partitions: 1}))
	var msgs []*broker.Message
	for i := 1; i <= 3; i++ {
		msgs = append(msgs, &broker.Message{Topic: topic, Route: "t.v1", Key: "k", ID: strconv.Itoa(i), Data: []byte(strconv.Itoa(i))})
	}
	if err := owner.Publish(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	opts := broker.SubscribeOptions{Group: "g", Start: broker.FromFirst, KeyOrder: true, AckWait: 3 * time.Second}
	sub := mustSubscribe(t, owner, topic, opts)
	var first broker.Delivery
	for want := 1; want <= 3; want++ {
		d := next(t, sub)
		if got := string(d.Message().Data); got != strconv.Itoa(want) {
			t.Fatalf("owner got event %s, want %d", got, want)
		}
		if want == 1 {
			first = d
		}
	}
	// Well inside the keepalive period (a third of the ack wait), so only
	// this extension reaches the server before the crash.
	time.Sleep(300 * time.Millisecond)
	if err := first.InProgress(ctx); err != nil {
		t.Fatal(err)
	}
	owner.Conn().Close() // a crash: no unpin, no leave, no acks

	heir := newBroker(t, natsjs.WithEmbedded(e))
	natsjs.FailResets(heir, failResets)
	sub2 := mustSubscribe(t, heir, topic, opts)
	for want := 1; want <= 3; want++ {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		d, err := sub2.Next(dctx)
		cancel()
		if err != nil {
			t.Fatalf("waiting for event %d after the takeover: %v", want, err)
		}
		if got := string(d.Message().Data); got != strconv.Itoa(want) {
			t.Fatalf("after the takeover got event %s, want %d: stream order lost", got, want)
		}
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := natsjs.ResetsToFail(heir); n != 0 {
		t.Fatalf("%d of the %d refused resets were never tried: the takeover did not reset", n, failResets)
	}
}
