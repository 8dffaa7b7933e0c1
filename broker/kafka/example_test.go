package kafka_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/kafka"
)

func Example() {
	// An in-process Kafka for the example; a real one is selected the same
	// way, with its URL.
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts, err := kafka.ParseURL("kafka://" + cluster.ListenAddrs()[0])
	if err != nil {
		log.Fatal(err)
	}
	b, err := kafka.New(ctx, opts...)
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	err = b.Publish(ctx, &broker.Message{Topic: "orders", Route: "shop.order.placed.v1", Key: "o-1", ID: "e-1", Data: []byte(`{"total":42}`)})
	if err != nil {
		log.Fatal(err)
	}
	sub, err := b.Subscribe(ctx, "orders", broker.SubscribeOptions{Group: "billing", Start: broker.FromFirst})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	d, err := sub.Next(ctx)
	if err != nil {
		log.Fatal(err)
	}
	m := d.Message()
	fmt.Println(m.Route, m.Key, string(m.Data), "attempt", d.Attempt())
	if err := d.Ack(ctx); err != nil {
		log.Fatal(err)
	}
	// Output: shop.order.placed.v1 o-1 {"total":42} attempt 1
}
