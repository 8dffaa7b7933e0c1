package e2ebench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	// The Herald side opens kafka:// and amqp:// URLs through the
	// adapters' registration.
	_ "github.com/heraldhq/herald/broker/kafka"
	_ "github.com/heraldhq/herald/broker/rabbitmq"
)

// scheme returns the broker kind a URL names: "nats" (also for an empty
// URL: the embedded server), "kafka" or "amqp".
func scheme(url string) (string, error) {
	s, _, ok := strings.Cut(url, "://")
	switch {
	case url == "" || (ok && (s == "nats" || s == "tls")):
		return "nats", nil
	case ok && s == "kafka":
		return "kafka", nil
	case ok && (s == "amqp" || s == "amqps"):
		return "amqp", nil
	}
	return "", fmt.Errorf("url %q: want nats://, tls://, kafka:// or amqp:// (amqps://)", url)
}

// kafkaSeeds returns the host:port list of a kafka:// URL.
func kafkaSeeds(url string) []string {
	rest := strings.TrimPrefix(url, "kafka://")
	rest, _, _ = strings.Cut(rest, "?")
	return strings.Split(rest, ",")
}

// deleteKafkaTopics removes topics, best effort: the Herald side's topic
// and its dead-letter topic.
func deleteKafkaTopics(url string, topics ...string) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafkaSeeds(url)...))
	if err != nil {
		return
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = kadm.NewClient(cl).DeleteTopics(ctx, topics...)
}

// runKafkaPlain is the fastest loop of the raw franz-go client: one
// producer with the client's own batching and up to plainPending records
// buffered, no headers, and a group consumer that marks each record after
// recording it and commits the marks (franz-go's autocommit of marks), on
// a topic with the partitions Herald's topic gets.
func runKafkaPlain(ctx context.Context, cfg Config, url string) (Side, error) {
	seeds := kafkaSeeds(url)
	topic := uniqueName("bench_plain")
	prod, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic(topic), kgo.MaxBufferedRecords(plainPending))
	if err != nil {
		return Side{}, err
	}
	defer prod.Close()
	adm := kadm.NewClient(prod)
	resp, err := adm.CreateTopic(ctx, int32(max(cfg.Partitions, 1)), -1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return Side{}, fmt.Errorf("create topic %s: %w", topic, err)
	}
	defer adm.DeleteTopics(context.Background(), topic) //nolint:errcheck // best effort

	cons, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumerGroup(topic), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.AutoCommitMarks())
	if err != nil {
		return Side{}, err
	}
	rec := newRecorder(cfg.Rate * int(cfg.Duration.Seconds()+1))
	cctx, stop := context.WithCancel(ctx)
	var consumed sync.WaitGroup
	consumed.Go(func() {
		for cctx.Err() == nil {
			fs := cons.PollFetches(cctx)
			fs.EachRecord(func(r *kgo.Record) {
				if n, sent, ok := parse(r.Value); ok {
					rec.record(n, sent)
				}
				cons.MarkCommitRecords(r)
			})
		}
	})
	defer func() {
		stop()
		consumed.Wait()
		cons.Close()
	}()

	var failed failures
	return plainLoop(ctx, cfg, rec, func(i int, p []byte) error {
		prod.Produce(ctx, &kgo.Record{Key: []byte("k" + strconv.Itoa(i%cfg.Keys)), Value: p}, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.add(err)
			}
		})
		return nil
	}, func(sent int) error {
		if err := prod.Flush(ctx); err != nil {
			return err
		}
		return failed.err(sent, "records")
	})
}

// runRabbitPlain is the fastest loop of the raw amqp091-go client for what
// a Herald group is on RabbitMQ: a durable quorum queue, one publisher on
// a confirming channel with up to plainPending confirmations outstanding,
// persistent messages without headers, and a consumer that acks each
// message with a prefetch of plainPending.
func runRabbitPlain(ctx context.Context, cfg Config, url string) (Side, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return Side{}, err
	}
	defer conn.Close()
	pch, err := conn.Channel()
	if err != nil {
		return Side{}, err
	}
	name := uniqueName("bench_plain")
	if _, err := pch.QueueDeclare(name, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		return Side{}, fmt.Errorf("declare queue %s: %w", name, err)
	}
	defer func() {
		if ch, err := conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(name, false, false, false)
			_ = ch.Close()
		}
	}()
	if err := pch.Confirm(false); err != nil {
		return Side{}, err
	}

	cch, err := conn.Channel()
	if err != nil {
		return Side{}, err
	}
	if err := cch.Qos(plainPending, 0, false); err != nil {
		return Side{}, err
	}
	deliveries, err := cch.ConsumeWithContext(ctx, name, "", false, false, false, false, nil)
	if err != nil {
		return Side{}, err
	}
	rec := newRecorder(cfg.Rate * int(cfg.Duration.Seconds()+1))
	var consumed sync.WaitGroup
	consumed.Go(func() {
		for d := range deliveries {
			if n, sent, ok := parse(d.Body); ok {
				rec.record(n, sent)
			}
			_ = d.Ack(false)
		}
	})
	defer func() {
		_ = cch.Close() // ends deliveries
		consumed.Wait()
	}()

	// Confirmations are awaited in order by one goroutine; the window
	// bounds how many are outstanding.
	window := make(chan *amqp.DeferredConfirmation, plainPending)
	var (
		failed    failures
		confirmed sync.WaitGroup
	)
	confirmed.Go(func() {
		for dc := range window {
			ok, err := dc.WaitContext(ctx)
			if err == nil && !ok {
				err = errors.New("nacked by the broker")
			}
			if err != nil {
				failed.add(err)
			}
		}
	})
	return plainLoop(ctx, cfg, rec, func(_ int, p []byte) error {
		dc, err := pch.PublishWithDeferredConfirmWithContext(ctx, "", name, false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, ContentType: "application/octet-stream", Body: p})
		if err != nil {
			return err
		}
		window <- dc
		return nil
	}, func(sent int) error {
		close(window)
		confirmed.Wait()
		return failed.err(sent, "messages")
	})
}
