// Command natsonly is a service that uses Herald on NATS JetStream only.
// TestNATSOnlyServiceLinksNoOtherClient lists its dependencies.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
)

func main() {
	b, err := natsjs.New(context.Background(), natsjs.WithURL("nats://127.0.0.1:4222"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	c, err := herald.Connect(context.Background(), herald.Config{Broker: b, Source: "natsonly"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_ = c.Close()
	_ = b.Close()
}
