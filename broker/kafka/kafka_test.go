package kafka_test

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	"github.com/heraldhq/herald/broker/kafka"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newCluster starts an in-process Kafka (kfake) for one test.
func newCluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// newBroker connects an adapter to c with timings suited to tests: fast
// heartbeats so rebalances take milliseconds, frequent commits.
func newBroker(t testing.TB, c *kfake.Cluster, opts ...kafka.Option) *kafka.Broker {
	t.Helper()
	base := []kafka.Option{
		kafka.WithSeeds(c.ListenAddrs()...),
		kafka.WithConsumerOptions(kgo.HeartbeatInterval(100 * time.Millisecond)),
		kafka.WithCommitInterval(100 * time.Millisecond),
	}
	b, err := kafka.New(t.Context(), append(base, opts...)...)
	if err != nil {
		t.Fatalf("kafka.New: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) broker.Broker {
		return newBroker(t, newCluster(t))
	}, brokertest.Features{Skip: map[string]string{
		brokertest.TestDedup: "Kafka keeps no window of message ids: the idempotent producer drops only " +
			"its own retried batches (producer id + sequence), so a message published twice with the same " +
			"ID is stored twice; consumers deduplicate by ID (idempotency store / inbox)",
		brokertest.TestWorkQueue: "Kafka shares a group's work by partition and the suite's topics have the " +
			"default single partition, so only one member consumes the topic (the other gets the retry " +
			"topic's partition); work sharing is tested by TestGroupRebalance on a multi-partition topic",
	}})
}

// TestConformanceFourPartitions runs the suite on topics of four
// partitions, where each group spreads over several partitions and the
// commit bookkeeping runs per partition.
func TestConformanceFourPartitions(t *testing.T) {
	const unordered = "messages without a key spread over the four partitions and have no order, " +
		"which this test relies on; TestConformance runs it on one partition"
	brokertest.Run(t, func(t *testing.T) broker.Broker {
		return newBroker(t, newCluster(t), kafka.WithTopicDefaults(broker.TopicConfig{Partitions: 4}))
	}, brokertest.Features{Skip: map[string]string{
		brokertest.TestDedup:          "Kafka keeps no window of message ids (see TestConformance)",
		brokertest.TestPublishConfirm: unordered,
		brokertest.TestStartPositions: "sequences are positions in one partition; " + unordered,
		brokertest.TestWorkQueue: "messages without a key may all land on one partition (the sticky partitioner " +
			"fills a batch on one), so one member may get them all; TestGroupRebalance uses keys",
	}})
}
