package audit

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/kafka"
	"github.com/heraldhq/herald/event"
)

// TestIndexerReadsKafkaTopics indexes the topics of a Kafka broker
// (kfake) through WithTopicReader, stops, and resumes on the same store:
// every event of a three-partition topic is indexed once, those stored
// while the indexer was stopped included.
func TestIndexerReadsKafkaTopics(t *testing.T) {
	t.Parallel()
	kc, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	kb, err := kafka.New(t.Context(), kafka.WithSeeds(kc.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kb.Close() })
	const topic = "payments"
	if err := kb.EnsureTopic(t.Context(), topic, broker.TopicConfig{Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	publish := func(from, to int) {
		t.Helper()
		var msgs []*broker.Message
		for i := from; i < to; i++ {
			e := event.New("svc", "payment.made.v1", fmt.Appendf(nil, `{"i":%d}`, i))
			e.Subject, e.CorrelationID = fmt.Sprintf("p-%d", i), "batch-1"
			h := map[string]string{}
			event.Kafka.Encode(e, h)
			msgs = append(msgs, &broker.Message{Topic: topic, Route: e.Type, Key: e.Subject, ID: e.ID, Header: h, Data: e.Data})
		}
		if err := kb.Publish(t.Context(), msgs...); err != nil {
			t.Fatal(err)
		}
	}
	s := sqliteStore(t)
	count := func(want int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			recs, err := s.Query(t.Context(), Query{CorrelationID: "batch-1", Limit: 1000})
			if err != nil {
				t.Fatal(err)
			}
			ids := map[string]bool{}
			for _, r := range recs {
				if r.Topic != topic || r.Type != "payment.made.v1" || r.Subject == "" || ids[r.ID] {
					t.Fatalf("record %+v (duplicate: %v)", r, ids[r.ID])
				}
				ids[r.ID] = true
			}
			if len(recs) == want {
				return
			}
			if len(recs) > want || time.Now().After(deadline) {
				t.Fatalf("%d records of the correlation id, want %d", len(recs), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	b := newBroker(t)
	publish(0, 30)
	_, stop := runIndexer(t, b, s, WithTopicReader("kafka", kb, event.Kafka), WithPollInterval(50*time.Millisecond))
	count(30)
	stop()
	publish(30, 45)
	_, stop = runIndexer(t, b, s, WithTopicReader("kafka", kb, event.Kafka), WithPollInterval(50*time.Millisecond))
	count(45)
	publish(45, 50)
	count(50)
	stop()
	if _, err := NewIndexer(b.JetStream(), s, WithTopicReader("", kb, event.Kafka)); err == nil {
		t.Error("WithTopicReader without a name accepted")
	}
}
