// Command shipping runs the shop's shipping against a Herald broker, its
// registry and PostgreSQL:
//
//	go run ./examples/shop/cmd/shipping --url nats://127.0.0.1:4222 --registry http://127.0.0.1:8081
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
	if err := shop.Main(ctx, "shipping", os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "shipping:", err)
		os.Exit(1)
	}
}
