// Command notifications runs the shop's notifications against a Herald broker, its
// registry and PostgreSQL:
//
//	go run ./examples/shop/cmd/notifications --url nats://127.0.0.1:4222 --registry http://127.0.0.1:8081
//
// See the shop package for what it does and -h for its flags.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/heraldhq/herald/examples/shop"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := shop.Main(ctx, "notifications", os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "notifications:", err)
		os.Exit(1)
	}
}
