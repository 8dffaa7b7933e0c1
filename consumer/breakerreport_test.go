package consumer_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
)

// A router with a breaker reports its state to BreakerTopic: when it
// opens, and a last report when the router stops.
func TestBreakerReportsItsState(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	topic, group := unique("reported"), unique("reporter")
	r, err := consumer.NewRouter(b, b, group, []string{topic}, consumer.WithStart(broker.FromFirst),
		consumer.WithConcurrency(1), consumer.WithoutDeadLetter(),
		consumer.WithBreaker(consumer.BreakerConfig{Failures: 2, OpenFor: time.Hour}))
	if err != nil {
		t.Fatal(err)
	}
	r.HandleAll(func(context.Context, *consumer.Message) error { return errors.New("downstream down") })
	stop := run(t, r)
	reports, err := b.Subscribe(context.Background(), consumer.BreakerTopic, broker.SubscribeOptions{Group: unique("reports"), Start: broker.FromFirst})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reports.Close() })
	// next returns the next report of this test's group.
	next := func(what string) consumer.BreakerReport {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for {
			d, err := reports.Next(ctx)
			if err != nil {
				t.Fatalf("waiting for %s: %v", what, err)
			}
			_ = d.Ack(ctx)
			var rep consumer.BreakerReport
			if err := json.Unmarshal(d.Message().Data, &rep); err != nil {
				t.Fatalf("report %q: %v", d.Message().Data, err)
			}
			if rep.Group == group {
				return rep
			}
		}
	}
	first := next("the first report")
	if first.State != "closed" || first.Instance == "" || first.Reported.IsZero() || first.Stopped {
		t.Fatalf("first report %+v, want closed from a named instance", first)
	}
	publish(t, b, topic, "t.v1", 5, nil)
	rep := next("the report of the opening")
	for rep.State == "closed" {
		rep = next("the report of the opening")
	}
	if rep.State != "open" || rep.OpenUntil.Before(time.Now().Add(50*time.Minute)) || rep.Since.IsZero() || rep.Instance != first.Instance {
		t.Fatalf("report after the failures %+v, want open for an hour, from %s", rep, first.Instance)
	}
	stop()
	last := next("the last report")
	for !last.Stopped {
		last = next("the last report")
	}
	if last.State != "open" {
		t.Fatalf("last report %+v, want the open breaker, stopped", last)
	}
}
