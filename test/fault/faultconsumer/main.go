//go:build fault

// Command faultconsumer is a key-ordered consumer for the fault suite: it
// joins a group on a topic and appends "key seq pid" to a log file for
// every event it handles, before the event is acknowledged. Every
// instance appends to the same file (O_APPEND), so the file's line order
// is the order in which the handlers ran.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
)

func main() {
	url := flag.String("url", "", "NATS URL")
	topic := flag.String("topic", "", "topic to consume")
	group := flag.String("group", "", "consumer group")
	out := flag.String("log", "", "file every handled event is appended to")
	ackWait := flag.Duration("ack-wait", 2*time.Second, "ack wait")
	flag.Parse()
	if err := run(*url, *topic, *group, *out, *ackWait); err != nil {
		log.Fatal(err)
	}
}

func run(url, topic, group, out string, ackWait time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	c, err := herald.Connect(ctx, herald.Config{URL: url, Source: "faultconsumer"})
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.Router(group, []string{topic}, consumer.WithStart(broker.FromFirst), consumer.WithAckWait(ackWait),
		consumer.WithConcurrency(8), consumer.WithShutdownTimeout(5*time.Second))
	if err != nil {
		return err
	}
	pid := os.Getpid()
	r.HandleAll(func(_ context.Context, m *consumer.Message) error {
		// One write per event: appends of one write are not interleaved.
		_, err := f.Write(fmt.Appendf(nil, "%s %s %d\n", m.Event.Subject, m.Event.Data, pid))
		return err
	})
	fmt.Println("ready")
	if err := r.Run(ctx); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}
