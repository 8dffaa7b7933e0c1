package consumer_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
)

// replay is a subscriber that hands out deliveries built before the
// benchmark's timer starts, so that what the benchmark counts is the
// router's own work per delivery: decoding the envelope, building the
// Message, the lane hand-off, the middleware and settling. What the broker
// adapter costs to receive a message is measured in its own package
// (broker/natsjs BenchmarkConsumeAck).
type replay struct {
	ds    []replayDelivery
	next  atomic.Int64
	acked atomic.Int64
	done  chan struct{}
	once  sync.Once
}

func (r *replay) Subscribe(context.Context, string, broker.SubscribeOptions) (broker.Subscription, error) {
	return r, nil
}

func (r *replay) Next(ctx context.Context) (broker.Delivery, error) {
	i := r.next.Add(1) - 1
	if int(i) >= len(r.ds) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &r.ds[i], nil
}

func (r *replay) Close() error { return nil }

func (r *replay) settled() {
	if int(r.acked.Add(1)) == len(r.ds) {
		r.once.Do(func() { close(r.done) })
	}
}

type replayDelivery struct {
	r   *replay
	msg *broker.Message
	seq uint64
}

func (d *replayDelivery) Message() *broker.Message { return d.msg }
func (d *replayDelivery) Attempt() int             { return 1 }
func (d *replayDelivery) Sequence() uint64         { return d.seq }
func (d *replayDelivery) Timestamp() time.Time     { return time.Time{} }
func (d *replayDelivery) Ack(context.Context) error {
	d.r.settled()
	return nil
}
func (d *replayDelivery) Nack(context.Context, time.Duration) error { d.r.settled(); return nil }
func (d *replayDelivery) Term(context.Context, string) error        { d.r.settled(); return nil }
func (d *replayDelivery) InProgress(context.Context) error          { return nil }

// BenchmarkRouterDelivery is the router's work per delivery, with the
// defaults (at-least-once, retry and dead-letter middleware), on events
// as the SDK publishes them over NATS (CloudEvents binary-mode headers,
// 256-byte payload); allocs/op is allocations per event.
//
//	go test -run '^$' -bench RouterDelivery -benchmem ./consumer
func BenchmarkRouterDelivery(b *testing.B) {
	data := make([]byte, 256)
	ev := event.New("bench", "bench.event.v1", data)
	ev.Subject = "order-1"
	ev.DataContentType = "application/octet-stream"
	ev.CorrelationID = "c-1"
	h := map[string]string{}
	event.NATS.Encode(ev, h)
	r := &replay{ds: make([]replayDelivery, b.N), done: make(chan struct{})}
	for i := range r.ds {
		r.ds[i] = replayDelivery{r: r, seq: uint64(i + 1),
			msg: &broker.Message{Topic: "bench", Route: ev.Type, Key: ev.Subject, ID: ev.ID, Header: h, Data: data}}
	}
	mem := memory.New()
	b.Cleanup(func() { _ = mem.Close() })
	router, err := consumer.NewRouter(r, mem, "g", []string{"bench"}, consumer.WithBinding(event.NATS))
	if err != nil {
		b.Fatal(err)
	}
	router.Handle(ev.Type, func(context.Context, *consumer.Message) error { return nil })
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	b.ReportAllocs()
	b.ResetTimer()
	go func() { errc <- router.Run(ctx) }()
	select {
	case <-r.done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%d of %d deliveries settled", r.acked.Load(), b.N)
	}
	b.StopTimer()
	cancel()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
}
