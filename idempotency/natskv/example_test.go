package natskv_test

import (
	"context"
	"log"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/idempotency/natskv"
)

func ExampleNew() {
	ctx := context.Background()
	nc, err := nats.Connect("nats://127.0.0.1:4222")
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	store, err := natskv.New(ctx, js, "herald_idempotency", natskv.WithReplicas(3))
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Claim(ctx, "billing/evt-1", time.Minute); err != nil {
		log.Fatal(err)
	}
}
