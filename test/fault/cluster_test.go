//go:build fault

package fault

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/netport"
)

// freeAddrs returns n distinct loopback addresses whose ports were free a
// moment ago, outside the range the kernel gives outgoing connections, so
// the nodes dialling each other cannot take one before its node listens.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	addrs, err := netport.LoopbackAddrs(n)
	if err != nil {
		t.Fatal(err)
	}
	return addrs
}

// startCluster runs n `herald serve --cluster` nodes on loopback.
func startCluster(t *testing.T, bin string, n int) []*server {
	t.Helper()
	addrs := freeAddrs(t, 3*n)
	at := make([]clusterNode, n)
	for i := range at {
		at[i] = clusterNode{nats: addrs[i], http: addrs[n+i], route: addrs[2*n+i]}
	}
	return startClusterAt(t, bin, at)
}

// clusterNode is where one node of a test cluster listens, and what runs
// it (server.wrap).
type clusterNode struct {
	nats, http, route string
	wrap              []string
	extra             []string
}

// startClusterAt runs a `herald serve --cluster` node per entry of at,
// all started at once as an operator would, each on fixed addresses so a
// restarted node comes back where it was, and waits until every one is
// ready.
func startClusterAt(t *testing.T, bin string, at []clusterNode) []*server {
	t.Helper()
	var spec []string
	for i, a := range at {
		spec = append(spec, fmt.Sprintf("n%d=%s", i+1, a.route))
	}
	nodes := make([]*server, len(at))
	states := make([]string, len(at))
	for i, a := range at {
		s := &server{t: t, bin: bin, dataDir: filepath.Join(t.TempDir(), fmt.Sprintf("n%d", i+1)),
			natsAddr: a.nats, httpAddr: a.http, wrap: a.wrap,
			extra: append([]string{"--cluster", strings.Join(spec, ","), "--node", fmt.Sprintf("n%d", i+1)}, a.extra...)}
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

// connectAll connects the SDK to every node of a 3-node cluster, with a
// short reconnect wait (the client is what notices a node coming back),
// group commit and the suite's publish timeout.
func connectAll(t *testing.T, urls []string) (*natsjs.Broker, *herald.Client) {
	t.Helper()
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
	return b, c
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
	b, c := connectAll(t, urls)
	const topic = "clusterfault"

	ld := startLoad(t, c, topic)
	ackedSince := ld.ackedSince
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
		ld.resetGap()
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
		d, n := ld.stats()
		unavail = append(unavail, d)
		t.Logf("kill %d/%d: %s %s, longest without a confirmation %s, %d acked", k+1, kills, sig, node.extra[3], d.Round(time.Millisecond), n)
	}
	sum, _ := ld.lost(t, true, func() (map[string]struct{}, int) { return readTopic(t, b, topic) })
	sum.Cycles, sum.MaxUnavailabilityMS, sum.DurationS = kills, ms(slices.Max(unavail)), time.Since(began).Seconds()
	report(t, sum)
	t.Logf("unavailability per kill: %v; %d publishes failed and were retried", unavail, ld.fails.Load())
	if sum.Lost > 0 {
		t.Fatalf("%d of %d acked events lost over %d node kills", sum.Lost, sum.Acked, kills)
	}
}
