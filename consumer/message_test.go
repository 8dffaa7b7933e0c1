package consumer_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
)

type ctxTestKey struct{}

// The context a handler gets carries its message (FromContext) and what
// the router's context carries, and a retry the handler asks for is
// honoured: each delivery is its own Message, with its own event.
func TestHandlerContextAndMessages(t *testing.T) {
	t.Parallel()
	b := newBroker(t)
	topic := unique("ctx")
	r, err := consumer.NewRouter(b, b, "g", []string{topic}, consumer.WithStart(broker.FromFirst))
	if err != nil {
		t.Fatal(err)
	}
	type seen struct {
		m        *consumer.Message
		id, data string
		attempt  int
	}
	got := make(chan seen, 10)
	r.Handle("t.v1", func(ctx context.Context, m *consumer.Message) error {
		cm, ok := consumer.FromContext(ctx)
		if !ok || cm != m {
			t.Errorf("FromContext: %p %v, want the handled message %p", cm, ok, m)
		}
		if v, _ := ctx.Value(ctxTestKey{}).(string); v != "from-run" {
			t.Errorf("the handler's context lost the router's values: %q", v)
		}
		got <- seen{m: m, id: m.Event.ID, data: string(m.Event.Data), attempt: m.Attempt}
		if m.Attempt == 1 {
			return consumer.RetryAfter(errors.New("once more"), 10*time.Millisecond)
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxTestKey{}, "from-run"))
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	evs := publish(t, b, topic, "t.v1", 2, nil)
	want := map[string]int{evs[0].ID: 0, evs[1].ID: 0}
	var all []seen
	for len(all) < 4 {
		select {
		case s := <-got:
			all = append(all, s)
		case <-time.After(30 * time.Second):
			t.Fatalf("handled %d deliveries in 30s, want 4 (2 events, each retried once)", len(all))
		}
	}
	for i, s := range all {
		if _, ok := want[s.id]; !ok {
			t.Fatalf("delivery %d: event id %q was not published", i, s.id)
		}
		want[s.id]++
		if s.m.Event.ID != s.id || string(s.m.Event.Data) != s.data {
			t.Fatalf("delivery %d: message changed after its handler returned: event %q %q, was %q %q", i, s.m.Event.ID, s.m.Event.Data, s.id, s.data)
		}
		for j, o := range all[:i] {
			if o.m == s.m {
				t.Fatalf("deliveries %d and %d share one Message", j, i)
			}
		}
	}
	for id, n := range want {
		if n != 2 {
			t.Fatalf("event %s handled %d times, want 2", id, n)
		}
	}
}
