package natsjs_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/netport"
)

// startEmbeddedCluster starts three embedded nodes at once, as three
// `herald serve --cluster` processes started together would, and returns
// a broker on each, each created at the same moment too.
func startEmbeddedCluster(t *testing.T) ([]*natsjs.Embedded, []*natsjs.Broker) {
	t.Helper()
	routes, err := netport.Loopback(3)
	if err != nil {
		t.Fatal(err)
	}
	nodes := make([]*natsjs.Embedded, 3)
	brokers := make([]*natsjs.Broker, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() {
			var peers []string
			for j, p := range routes {
				if j != i {
					peers = append(peers, fmt.Sprintf("127.0.0.1:%d", p))
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			e, err := natsjs.RunEmbedded(ctx, natsjs.EmbeddedConfig{
				DataDir: t.TempDir(), Addr: "127.0.0.1:0", ServerName: fmt.Sprintf("n%d", i),
				Cluster: &natsjs.ClusterConfig{Name: "test", Addr: fmt.Sprintf("127.0.0.1:%d", routes[i]), Peers: peers},
			})
			if err != nil {
				errs[i] = err
				return
			}
			nodes[i] = e
			brokers[i], errs[i] = natsjs.New(ctx, natsjs.WithEmbedded(e), natsjs.WithReadyTimeout(60*time.Second))
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for i := range nodes {
			if brokers[i] != nil {
				_ = brokers[i].Close()
			}
			if nodes[i] != nil {
				nodes[i].Shutdown()
			}
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	return nodes, brokers
}

// TestEmbeddedClusterStartsTogether starts three embedded nodes at once
// and creates the same topic through each of them at the same moment, as
// every `herald serve` node does with its own topics at start: each call
// succeeds and the topic keeps three copies.
func TestEmbeddedClusterStartsTogether(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	nodes, brokers := startEmbeddedCluster(t)
	for i, b := range brokers {
		if got := b.Replicas(); got != 3 {
			t.Errorf("node %d: broker creates topics with %d replicas, want 3", i, got)
		}
		if got := nodes[i].Replicas(); got != 3 {
			t.Errorf("node %d: embedded server says %d replicas, want 3", i, got)
		}
	}
	errs := make([]error, len(brokers))
	var wg sync.WaitGroup
	for i, b := range brokers {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			errs[i] = b.EnsureTopic(ctx, "together", broker.TopicConfig{})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("node %d: EnsureTopic: %v", i, err)
		}
	}
	s, err := brokers[0].JetStream().Stream(t.Context(), natsjs.StreamName("together"))
	if err != nil {
		t.Fatal(err)
	}
	if r := s.CachedInfo().Config.Replicas; r != 3 {
		t.Errorf("topic has %d replicas, want 3", r)
	}
}
