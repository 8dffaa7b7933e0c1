//go:build fault && linux

package fault

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker/natsjs"
)

// TestPartitionNodeLosesNoAckedEvent runs three `herald serve --cluster`
// nodes, each in a network namespace of its own wired to a bridge, and
// publishes through the SDK (connected to all three, from the host's
// namespace) while one node at a time is cut off the network (its link
// to the bridge goes down: no packet in or out, connections hang rather
// than close) and later reconnected. Partitions alternate between the
// node the client is connected to, the topic's stream leader and a
// follower, HERALD_FAULT_PARTITIONS times (default 3), each
// HERALD_FAULT_PARTITION_MS long (default 15000: past JetStream's 4-9 s
// election and the client's 6-8 s of unanswered pings). Every confirmed event must be stored, the
// majority must go on confirming while the node is away, and the node
// must catch up once back.
func TestPartitionNodeLosesNoAckedEvent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the partition test makes network namespaces: run the fault suite as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("the partition test needs iproute2's ip (apt-get install iproute2): %v", err)
	}
	parts := envInt(t, "HERALD_FAULT_PARTITIONS", 3)
	hold := time.Duration(envInt(t, "HERALD_FAULT_PARTITION_MS", 15000)) * time.Millisecond
	rnd := newRand(t)
	bin := build(t, "./cmd/herald")
	l := newLAN(t, 3)
	at := make([]clusterNode, 3)
	for i := range at {
		ip := l.addr(i)
		at[i] = clusterNode{nats: ip + ":4222", http: ip + ":8080", route: ip + ":6222",
			wrap: []string{"ip", "netns", "exec", l.ns(i)}, extra: []string{"--insecure"}}
	}
	nodes := startClusterAt(t, bin, at)
	began := time.Now()
	var urls []string
	for _, s := range nodes {
		urls = append(urls, s.state.NATSURL)
	}
	b, c := connectAll(t, urls)
	const topic = "partition"
	ld := startLoad(t, c, topic)
	waitFor(t, time.Minute, func() string { return "a first confirmed publish" }, func() bool { return ld.ackedSince(began) })
	stream, err := b.JetStream().Stream(t.Context(), natsjs.StreamName(topic))
	if err != nil {
		t.Fatal(err)
	}

	var unavail []time.Duration
	for p := range parts {
		<-time.After(500*time.Millisecond + time.Duration(rnd.Int64N(int64(time.Second))))
		var info jetstream.ClusterInfo
		waitFor(t, time.Minute, func() string { return "stream " + topic + " has a leader and two replicas" }, func() bool {
			info = streamCluster(t, stream)
			return info.Leader != "" && len(info.Replicas) == 2
		})
		// In turn: the node the client is connected to, the stream's
		// leader, a follower the client is not connected to.
		via := b.Conn().ConnectedServerName()
		var victim, role string
		switch p % 3 {
		case 0:
			victim, role = via, "client's node"
		case 1:
			victim, role = info.Leader, "leader"
		default:
			victim, role = info.Replicas[rnd.IntN(len(info.Replicas))].Name, "follower"
			if victim == via {
				victim = info.Replicas[0].Name
				if victim == via {
					victim = info.Replicas[1].Name
				}
			}
		}
		switch {
		case victim == via && victim == info.Leader:
			role = "client's node, leader"
		case victim == via:
			role = "client's node, follower"
		}
		i := slices.IndexFunc(nodes, func(s *server) bool { return s.extra[3] == victim })
		if i < 0 {
			t.Fatalf("stream %s: %s %q is none of the nodes", topic, role, victim)
		}
		ld.resetGap()
		cut := time.Now()
		l.cut(i)
		// The other two keep a quorum: confirmations must resume with the
		// node away. A client connected to it notices by a write that
		// times out or by its pings (SDK defaults: 5 s; three unanswered,
		// 2 s apart).
		waitFor(t, 2*time.Minute, func() string { return fmt.Sprintf("a publish confirmed with %s (the %s) cut off", victim, role) },
			func() bool { return ld.ackedSince(cut.Add(100 * time.Millisecond)) })
		resumed := time.Since(cut)
		t.Logf("partition %d: the client was connected to %s, is to %s now; last publish error: %s", p+1, via, b.Conn().ConnectedServerName(), ld.lastError())
		<-time.After(time.Until(cut.Add(hold)))
		l.heal(i)
		healed := time.Now()
		waitFor(t, 2*time.Minute, func() string { return "a publish confirmed after the partition healed" },
			func() bool { return ld.ackedSince(healed) })
		waitFor(t, 2*time.Minute, func() string {
			return fmt.Sprintf("%s current again in stream %s: %+v", victim, topic, streamCluster(t, stream))
		}, func() bool {
			ci := streamCluster(t, stream)
			if ci.Leader == "" || len(ci.Replicas) != 2 {
				return false
			}
			for _, r := range ci.Replicas {
				if !r.Current || r.Offline {
					return false
				}
			}
			return ci.Leader == victim || slices.ContainsFunc(ci.Replicas, func(r *jetstream.PeerInfo) bool { return r.Name == victim })
		})
		d, n := ld.stats()
		unavail = append(unavail, d)
		t.Logf("partition %d/%d: %s (the %s) cut off for %s; confirmations resumed after %s, longest without one %s; caught up %s after healing; %d acked",
			p+1, parts, victim, role, hold, resumed.Round(time.Millisecond), d.Round(time.Millisecond), time.Since(healed).Round(time.Millisecond), n)
	}
	sum, _ := ld.lost(t, true, func() (map[string]struct{}, int) { return readTopic(t, b, topic) })
	sum.Cycles, sum.MaxUnavailabilityMS, sum.DurationS = parts, ms(slices.Max(unavail)), time.Since(began).Seconds()
	report(t, sum)
	t.Logf("longest without a confirmation per partition: %v; %d publishes failed and were retried", unavail, ld.fails.Load())
	if sum.Lost > 0 {
		t.Fatalf("%d of %d acked events lost over %d partitions", sum.Lost, sum.Acked, parts)
	}
}

// streamCluster returns the stream's leader and replicas as the cluster
// reports them now; an unanswered request (an election under way) gives
// an empty value.
func streamCluster(t *testing.T, s jetstream.Stream) jetstream.ClusterInfo {
	t.Helper()
	info, err := s.Info(t.Context())
	if err != nil || info.Cluster == nil {
		return jetstream.ClusterInfo{}
	}
	return *info.Cluster
}

// lan is a bridge in the host's network namespace with n network
// namespaces on it, one veth pair each: namespace i has eth0 with
// addr(i); the host side of its pair is what cut takes down.
type lan struct {
	t  *testing.T
	id int
	n  int
}

// newLAN makes the bridge and the namespaces; the test's cleanup removes
// them (after the processes inside, registered later, stopped).
func newLAN(t *testing.T, n int) *lan {
	t.Helper()
	l := &lan{t: t, id: os.Getpid() % 100000, n: n}
	t.Cleanup(l.remove)
	l.ip("link", "add", l.bridge(), "type", "bridge")
	l.ip("addr", "add", l.subnet()+".254/24", "dev", l.bridge())
	l.ip("link", "set", l.bridge(), "up")
	for i := range n {
		peer := fmt.Sprintf("hfp%d-%d", l.id, i)
		l.ip("netns", "add", l.ns(i))
		l.ip("link", "add", l.hostIf(i), "type", "veth", "peer", "name", peer)
		l.ip("link", "set", peer, "netns", l.ns(i))
		l.ip("link", "set", l.hostIf(i), "master", l.bridge(), "up")
		l.ip("-n", l.ns(i), "link", "set", peer, "name", "eth0")
		l.ip("-n", l.ns(i), "addr", "add", l.addr(i)+"/24", "dev", "eth0")
		l.ip("-n", l.ns(i), "link", "set", "eth0", "up")
		l.ip("-n", l.ns(i), "link", "set", "lo", "up")
	}
	return l
}

func (l *lan) bridge() string      { return fmt.Sprintf("hfb%d", l.id) }
func (l *lan) ns(i int) string     { return fmt.Sprintf("herald-fault-%d-%d", l.id, i) }
func (l *lan) hostIf(i int) string { return fmt.Sprintf("hfv%d-%d", l.id, i) }
func (l *lan) subnet() string      { return fmt.Sprintf("10.213.%d", l.id%250) }
func (l *lan) addr(i int) string   { return fmt.Sprintf("%s.%d", l.subnet(), i+1) }

// cut takes namespace i off the bridge.
func (l *lan) cut(i int) { l.ip("link", "set", l.hostIf(i), "down") }

// heal puts it back.
func (l *lan) heal(i int) { l.ip("link", "set", l.hostIf(i), "up") }

func (l *lan) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (l *lan) remove() {
	for i := range l.n {
		_ = exec.Command("ip", "netns", "del", l.ns(i)).Run()
	}
	_ = exec.Command("ip", "link", "del", l.bridge()).Run()
}
