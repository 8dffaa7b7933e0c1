//go:build fault

package fault

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/event"
)

// publishTimeout bounds the wait for a confirmation. A publish in flight
// when the server dies is answered by nobody: its caller waits this long
// before retrying, so it is the floor of the unavailability a publisher
// sees (the SDK's default is 10 s).
const publishTimeout = 2 * time.Second

// TestSIGKILLLosesNoAckedEvent publishes from several goroutines while the
// server is SIGKILLed at random moments and restarted on its data dir,
// HERALD_FAULT_CYCLES times; then it reads the whole topic back. Every
// event whose publish was confirmed must be there.
func TestSIGKILLLosesNoAckedEvent(t *testing.T) {
	cycles := envInt(t, "HERALD_FAULT_CYCLES", 100)
	rnd := newRand(t)
	bin := build(t, "./cmd/herald")
	srv := startServer(t, bin, filepath.Join(t.TempDir(), "data"))
	began := time.Now()

	ctx := t.Context()
	// A short reconnect wait: the client is what notices the restart, and
	// nats.go's default (2 s) would dominate the measured unavailability.
	b, err := natsjs.New(ctx, natsjs.WithURL(srv.state.NATSURL, nats.ReconnectWait(50*time.Millisecond), nats.ReconnectJitter(0, 0)),
		natsjs.WithGroupCommit(true), natsjs.WithPublishTimeout(publishTimeout))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	c, err := herald.Connect(ctx, herald.Config{Broker: b, Source: "fault"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	const topic = "fault"

	// gen counts server processes: it moves on once the killed one is
	// gone, so a confirmation seen while g is current came from process g.
	var gen atomic.Int64
	firstAck := make([]atomic.Int64, cycles+2) // unix nanos
	var (
		mu    sync.Mutex
		acked = map[string]struct{}{}
		fails atomic.Int64
	)
	const workers, batch = 8, 20
	lctx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var evs []*event.Event
			for n := 0; lctx.Err() == nil; n++ {
				if evs == nil {
					evs = make([]*event.Event, batch)
					for i := range evs {
						evs[i] = event.New("fault", "fault.tick.v1", fmt.Appendf(nil, `{"w":%d,"n":%d}`, w, n*batch+i))
						evs[i].Subject = fmt.Sprintf("k%d", (n*batch+i)%64)
					}
				}
				pctx, cancel := context.WithTimeout(lctx, publishTimeout)
				err := c.PublishTo(pctx, topic, evs...)
				cancel()
				if err != nil {
					// Retried with the same ids: the server drops the
					// copies of those it had stored.
					fails.Add(1)
					select {
					case <-lctx.Done():
					case <-time.After(20 * time.Millisecond):
					}
					continue
				}
				firstAck[gen.Load()].CompareAndSwap(0, time.Now().UnixNano())
				mu.Lock()
				for _, e := range evs {
					acked[e.ID] = struct{}{}
				}
				mu.Unlock()
				evs = nil
			}
		}()
	}

	var maxUnavail, maxRestart time.Duration
	waitAck := func(g int64) {
		waitFor(t, 2*time.Minute, func() string { return fmt.Sprintf("a publish confirmed by server generation %d", g) },
			func() bool { return firstAck[g].Load() != 0 })
	}
	waitAck(0)
	for cycle := 1; cycle <= cycles; cycle++ {
		// Kill at a random moment of a load that runs 50 ms to 1.5 s.
		load := 50*time.Millisecond + time.Duration(rnd.Int64N(int64(1450*time.Millisecond)))
		<-time.After(load)
		killed := time.Now()
		srv.kill()
		g := gen.Add(1)
		srv.restart()
		restart := time.Since(killed)
		waitAck(g)
		unavail := time.Duration(firstAck[g].Load() - killed.UnixNano())
		maxUnavail, maxRestart = max(maxUnavail, unavail), max(maxRestart, restart)
		if cycle%10 == 0 || cycle == cycles {
			mu.Lock()
			n := len(acked)
			mu.Unlock()
			t.Logf("cycle %d/%d: %d acked, restart %s, unavailable %s", cycle, cycles, n, restart.Round(time.Millisecond), unavail.Round(time.Millisecond))
		}
	}
	stopLoad()
	wg.Wait()

	found, dups := readTopic(t, b, topic)
	lost := 0
	for id := range acked {
		if _, ok := found[id]; !ok {
			lost++
			if lost <= 10 {
				t.Errorf("acked event %s is missing", id)
			}
		}
	}
	report(t, Summary{Cycles: cycles, Acked: len(acked), Found: len(found), Lost: lost, Duplicates: dups,
		MaxUnavailabilityMS: ms(maxUnavail), MaxRestartMS: ms(maxRestart), DurationS: time.Since(began).Seconds()})
	t.Logf("%d publishes failed and were retried", fails.Load())
	if lost > 0 {
		t.Fatalf("%d of %d acked events lost over %d SIGKILL cycles", lost, len(acked), cycles)
	}
	if len(acked) == 0 {
		t.Fatal("no publish was confirmed")
	}
}

// readTopic reads every message of topic's stream and returns the ids
// found, and how many messages repeat an id.
func readTopic(t *testing.T, b *natsjs.Broker, topic string) (map[string]struct{}, int) {
	t.Helper()
	ctx := t.Context()
	s, err := b.JetStream().Stream(ctx, natsjs.StreamName(topic))
	if err != nil {
		t.Fatalf("topic %q: %v", topic, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	total := info.State.Msgs
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	it, err := cons.Messages()
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	found := make(map[string]struct{}, total)
	dups := 0
	for read := uint64(0); read < total; read++ {
		m, err := it.Next(jetstream.NextMaxWait(30 * time.Second))
		if err != nil {
			t.Fatalf("read %s after %d of %d messages: %v", topic, read, total, err)
		}
		id := m.Headers().Get(jetstream.MsgIDHeader)
		if _, ok := found[id]; ok {
			dups++
		}
		found[id] = struct{}{}
	}
	return found, dups
}
