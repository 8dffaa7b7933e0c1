package redisstore_test

import (
	"context"
	"log"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/idempotency/redisstore"
)

func ExampleNew() {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()
	store, err := redisstore.New(rdb, redisstore.WithPrefix("billing:idem:"))
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Claim(context.Background(), "billing/evt-1", time.Minute); err != nil {
		log.Fatal(err)
	}
}
