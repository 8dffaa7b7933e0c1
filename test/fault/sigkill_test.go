//go:build fault

package fault

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
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
	bin := build(t, "./cmd/herald")
	srv := startServer(t, bin, filepath.Join(t.TempDir(), "data"))
	sum, _ := killCycles(t, srv, cycles, 50*time.Millisecond, 1500*time.Millisecond, true)
	report(t, sum)
	if sum.Lost > 0 {
		t.Fatalf("%d of %d acked events lost over %d SIGKILL cycles", sum.Lost, sum.Acked, cycles)
	}
}

// killTarget is what killCycles kills and brings back: a `herald serve`
// process, or a virtual machine running one.
type killTarget interface {
	// url is the NATS URL clients connect to; it stays the same across
	// restarts.
	url() string
	// kill ends the target at once and returns when it is gone.
	kill()
	// restart brings it back on its data and returns once it is ready.
	restart()
}

func (s *server) url() string { return s.state.NATSURL }

// killCycles publishes (startLoad) while tg is killed at a random moment
// of a load that runs between minLoad and maxLoad and then restarted,
// cycles times; then it reads the whole topic back and counts the events
// whose publish was confirmed and that are missing. With mustKeep each
// missing event fails the test (the first 10 are named); without it they
// are only logged. The second result is, over the lost events, the longest time
// between a confirmation and the kill that lost it (the first kill after
// it).
func killCycles(t *testing.T, tg killTarget, cycles int, minLoad, maxLoad time.Duration, mustKeep bool) (Summary, time.Duration) {
	t.Helper()
	rnd := newRand(t)
	began := time.Now()

	ctx := t.Context()
	// A short reconnect wait: the client is what notices the restart, and
	// nats.go's default (2 s) would dominate the measured unavailability.
	b, err := natsjs.New(ctx, natsjs.WithURL(tg.url(), nats.ReconnectWait(50*time.Millisecond), nats.ReconnectJitter(0, 0)),
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
	ld := startLoad(t, c, topic)

	// A confirmation seen after kill() returned came from the restarted
	// target: the killed one is gone by then.
	var kills []time.Time // when each kill began
	var maxUnavail, maxRestart time.Duration
	waitFor(t, 2*time.Minute, func() string { return "a first confirmed publish" }, func() bool { return ld.ackedSince(began) })
	for cycle := 1; cycle <= cycles; cycle++ {
		load := minLoad + time.Duration(rnd.Int64N(int64(maxLoad-minLoad)+1))
		<-time.After(load)
		killed := time.Now()
		kills = append(kills, killed)
		tg.kill()
		gone := time.Now()
		tg.restart()
		restart := time.Since(killed)
		waitFor(t, 2*time.Minute, func() string {
			return fmt.Sprintf("a publish confirmed after restart %d (last publish error: %s)", cycle, ld.lastError())
		},
			func() bool { return ld.ackedSince(gone) })
		unavail := ld.firstAckSince(gone).Sub(killed)
		maxUnavail, maxRestart = max(maxUnavail, unavail), max(maxRestart, restart)
		if cycle%10 == 0 || cycle == cycles {
			_, n := ld.stats()
			t.Logf("cycle %d/%d: %d acked, restart %s, unavailable %s", cycle, cycles, n, restart.Round(time.Millisecond), unavail.Round(time.Millisecond))
		}
	}

	sum, lostAt := ld.lost(t, mustKeep, func() (map[string]struct{}, int) { return readTopic(t, b, topic) })
	var window time.Duration
	perKill := make([]int, len(kills))
	oldest := make([]time.Duration, len(kills))
	for _, at := range lostAt {
		if k, _ := slices.BinarySearchFunc(kills, at, func(k, at time.Time) int { return k.Compare(at) }); k < len(kills) {
			window = max(window, kills[k].Sub(at))
			perKill[k]++
			oldest[k] = max(oldest[k], kills[k].Sub(at))
		}
	}
	for k, n := range perKill {
		if n > 0 {
			t.Logf("kill %d at %s: %d confirmed events lost, the oldest confirmed %s before it", k+1, kills[k].Format("15:04:05.000"), n, oldest[k].Round(time.Millisecond))
		}
	}
	t.Logf("%d publishes failed and were retried", ld.fails.Load())
	if sum.Acked == 0 {
		t.Fatal("no publish was confirmed")
	}
	sum.Cycles, sum.MaxUnavailabilityMS, sum.MaxRestartMS, sum.DurationS = cycles, ms(maxUnavail), ms(maxRestart), time.Since(began).Seconds()
	return sum, window
}

// readTopic reads every message of topic's stream and returns the ids
// found, and how many messages repeat an id.
func readTopic(t *testing.T, b *natsjs.Broker, topic string) (map[string]struct{}, int) {
	t.Helper()
	// A cluster may still be electing after the last fault ("JetStream
	// system temporarily unavailable"): the API calls are retried as the
	// adapter retries them, within a bound.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var (
		s    jetstream.Stream
		info *jetstream.StreamInfo
		cons jetstream.Consumer
	)
	err := natsjs.Retry(ctx, func(ctx context.Context) (err error) {
		s, err = b.JetStream().Stream(ctx, natsjs.StreamName(topic))
		return err
	})
	if err != nil {
		t.Fatalf("topic %q: %v", topic, err)
	}
	if err := natsjs.Retry(ctx, func(ctx context.Context) (err error) {
		info, err = s.Info(ctx)
		return err
	}); err != nil {
		t.Fatalf("topic %q: stream info: %v", topic, err)
	}
	total := info.State.Msgs
	if err := natsjs.Retry(ctx, func(ctx context.Context) (err error) {
		cons, err = s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
		return err
	}); err != nil {
		t.Fatalf("topic %q: read-back consumer: %v", topic, err)
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
