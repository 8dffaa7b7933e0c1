package natsjs_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/netport"
)

// cluster starts three JetStream servers in this process, routed to each
// other on loopback ports, and returns their client URLs.
func cluster(t *testing.T) ([]*server.Server, []string) {
	t.Helper()
	ports, err := netport.Loopback(3)
	if err != nil {
		t.Fatal(err)
	}
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	servers := make([]*server.Server, 3)
	urls := make([]string, 3)
	for i := range servers {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i),
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoSigs:     true,
			Cluster: server.ClusterOpts{
				Name: "herald-test",
				Host: "127.0.0.1",
				Port: ports[i],
			},
			Routes: server.RoutesFromStr(strings.Join(routes, ",")),
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		servers[i] = s
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	}
	for i, s := range servers {
		if !s.ReadyForConnections(20 * time.Second) {
			t.Fatalf("server %d not ready", i)
		}
		urls[i] = s.ClientURL()
	}
	// JetStream is ready once a meta leader is elected and sees every
	// peer online (a replicated stream can be placed).
	deadline := time.Now().Add(30 * time.Second)
	for {
		peers := 0
		for _, s := range servers {
			if s.JetStreamIsLeader() {
				peers = len(s.JetStreamClusterPeers())
			}
		}
		if peers == len(servers) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("JetStream meta leader sees %d of %d peers online after 30s", peers, len(servers))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return servers, urls
}

// TestConformanceCluster runs the suite against a three-node JetStream
// cluster with topics replicated three times.
func TestConformanceCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	_, urls := cluster(t)
	url := strings.Join(urls, ",")
	brokertest.Run(t, func(t *testing.T) broker.Broker {
		return newBroker(t, natsjs.WithURL(url), natsjs.WithTopicDefaults(broker.TopicConfig{Replicas: 3}), natsjs.WithReadyTimeout(30*time.Second))
	}, brokertest.Features{Timeout: 30 * time.Second, AckWait: 30 * time.Second})
}

// TestClusterSurvivesANode publishes to a replicated topic, stops the
// server the client is connected to, and reads every confirmed message
// back through the others.
func TestClusterSurvivesANode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	servers, urls := cluster(t)
	ctx := t.Context()
	b := newBroker(t, natsjs.WithURL(strings.Join(urls, ",")), natsjs.WithTopicDefaults(broker.TopicConfig{Replicas: 3}), natsjs.WithReadyTimeout(30*time.Second))
	const n = 500
	msgs := make([]*broker.Message, n)
	for i := range msgs {
		msgs[i] = &broker.Message{Topic: "replicated", Route: "t.v1", ID: fmt.Sprint(i), Data: []byte(fmt.Sprint(i))}
	}
	if err := b.Publish(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	connected := b.Conn().ConnectedServerName()
	for _, s := range servers {
		if s.Name() == connected {
			s.Shutdown()
			s.WaitForShutdown()
		}
	}
	// The cluster elects new leaders and the client reconnects: retry
	// the subscription for up to 30s, as a service would.
	var sub broker.Subscription
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; {
		sub, err = b.Subscribe(ctx, "replicated", broker.SubscribeOptions{Group: "g", Start: broker.FromFirst})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscribe after losing %s: %v", connected, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	defer sub.Close()
	seen := map[string]bool{}
	for len(seen) < n {
		nctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		d, err := sub.Next(nctx)
		cancel()
		if err != nil {
			t.Fatalf("after losing %s, read %d of %d: %v", connected, len(seen), n, err)
		}
		seen[string(d.Message().Data)] = true
		_ = d.Ack(ctx)
	}
}
