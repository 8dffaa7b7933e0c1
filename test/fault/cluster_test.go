//go:build fault

package fault

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/event"
)

// freeAddrs returns n loopback addresses whose ports were free a moment
// ago (held together, so they differ).
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		addrs[i] = l.Addr().String()
	}
	return addrs
}

// startCluster runs n `herald serve --cluster` nodes, all started at
// once as an operator would, each on fixed addresses so a restarted node
// comes back where it was, and waits until every one is ready.
func startCluster(t *testing.T, bin string, n int) []*server {
	t.Helper()
	addrs := freeAddrs(t, 3*n)
	var spec []string
	for i := range n {
		spec = append(spec, fmt.Sprintf("n%d=%s", i+1, addrs[2*n+i]))
	}
	nodes := make([]*server, n)
	states := make([]string, n)
	for i := range nodes {
		s := &server{t: t, bin: bin, dataDir: filepath.Join(t.TempDir(), fmt.Sprintf("n%d", i+1)),
			natsAddr: addrs[i], httpAddr: addrs[n+i],
			extra: []string{"--cluster", strings.Join(spec, ","), "--node", fmt.Sprintf("n%d", i+1)}}
		states[i] = s.spawn()
		t.Cleanup(s.stop)
		nodes[i] = s
	}
	for i, s := range nodes {
		s.awaitStarted(states[i])
	}
	for _, s := range nodes {
		s.waitReady(2 * time.Minute)
	}
	return nodes
}

// TestClusterKillNodeLosesNoAckedEvent runs three `herald serve
// --cluster` nodes and publishes through the SDK (connected to all
// three) while one node at a time is killed, SIGKILL and SIGTERM in
// turn, and restarted, HERALD_FAULT_CLUSTER_KILLS times (default 6, each
// node twice). Every confirmed event must be stored; the longest time
// without any confirmation after a kill is the unavailability.
func TestClusterKillNodeLosesNoAckedEvent(t *testing.T) {
	kills := envInt(t, "HERALD_FAULT_CLUSTER_KILLS", 6)
	rnd := newRand(t)
	bin := build(t, "./cmd/herald")
	nodes := startCluster(t, bin, 3)
	began := time.Now()
	var urls []string
	for _, s := range nodes {
		urls = append(urls, s.state.NATSURL)
	}
	ctx := t.Context()
	b, err := natsjs.New(ctx, natsjs.WithURL(strings.Join(urls, ","), nats.ReconnectWait(50*time.Millisecond), nats.ReconnectJitter(0, 0)),
		natsjs.WithGroupCommit(true), natsjs.WithPublishTimeout(publishTimeout))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if r := b.Replicas(); r != 3 {
		t.Fatalf("a client of a 3-node cluster creates topics with %d replicas, want 3", r)
	}
	c, err := herald.Connect(ctx, herald.Config{Broker: b, Source: "fault"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	const topic = "clusterfault"

	var (
		mu      sync.Mutex
		acked   = map[string]struct{}{}
		lastAck time.Time
		// gaps: the longest stretch without a confirmation since the
		// last kill began.
		gap   time.Duration
		fails atomic.Int64
	)
	const workers, batch = 8, 20
	lctx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
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
					fails.Add(1) // retried with the same ids
					select {
					case <-lctx.Done():
					case <-time.After(20 * time.Millisecond):
					}
					continue
				}
				now := time.Now()
				mu.Lock()
				if !lastAck.IsZero() {
					gap = max(gap, now.Sub(lastAck))
				}
				lastAck = now
				for _, e := range evs {
					acked[e.ID] = struct{}{}
				}
				mu.Unlock()
				evs = nil
			}
		})
	}
	ackedSince := func(t0 time.Time) bool {
		mu.Lock()
		defer mu.Unlock()
		return lastAck.After(t0)
	}
	waitFor(t, time.Minute, func() string { return "a first confirmed publish" }, func() bool { return ackedSince(began) })
	if s, err := b.JetStream().Stream(ctx, natsjs.StreamName(topic)); err != nil {
		t.Fatal(err)
	} else if r := s.CachedInfo().Config.Replicas; r != 3 {
		t.Fatalf("topic created with %d replicas, want 3", r)
	}

	var unavail []time.Duration
	for k := range kills {
		node := nodes[k%len(nodes)]
		sig := syscall.SIGKILL
		if (k/len(nodes))%2 == 1 {
			sig = syscall.SIGTERM
		}
		<-time.After(500*time.Millisecond + time.Duration(rnd.Int64N(int64(time.Second))))
		mu.Lock()
		gap, lastAck = 0, time.Now()
		mu.Unlock()
		killed := time.Now()
		node.signal(sig)
		// Publishing must resume with the node down: wait for a
		// confirmation that came well after the kill.
		waitFor(t, time.Minute, func() string { return fmt.Sprintf("a publish confirmed after %s of %s", sig, node.extra[3]) },
			func() bool { return ackedSince(killed.Add(100 * time.Millisecond)) })
		// Keep the node down a moment under load, then bring it back.
		<-time.After(time.Second)
		node.restart()
		restarted := time.Now()
		waitFor(t, time.Minute, func() string { return "a publish confirmed after the restart" }, func() bool { return ackedSince(restarted) })
		mu.Lock()
		d := gap
		n := len(acked)
		mu.Unlock()
		unavail = append(unavail, d)
		t.Logf("kill %d/%d: %s %s, longest without a confirmation %s, %d acked", k+1, kills, sig, node.extra[3], d.Round(time.Millisecond), n)
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
	report(t, Summary{Cycles: kills, Acked: len(acked), Found: len(found), Lost: lost, Duplicates: dups,
		MaxUnavailabilityMS: ms(slices.Max(unavail)), DurationS: time.Since(began).Seconds()})
	t.Logf("unavailability per kill: %v; %d publishes failed and were retried", unavail, fails.Load())
	if lost > 0 {
		t.Fatalf("%d of %d acked events lost over %d node kills", lost, len(acked), kills)
	}
}
