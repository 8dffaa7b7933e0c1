package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/heraldhq/herald/broker"
)

// group is the broker topology of one consumer group on a topic.
//
// Unpartitioned: one quorum queue bound to the topic exchange with "#" or
// the group's routes. Partitioned into n: a headers exchange bound to the
// topic exchange, and n single-active-consumer quorum queues, queue i bound
// for the hash slots s with s%n == i. Either way a dead-letter quorum queue
// "<queue>/dlq" takes terminated messages.
type group struct {
	topic  string
	name   string
	queue  string // the group queue, or the prefix of the partition queues
	n      int    // partitions; 1: unpartitioned
	sac    bool   // single active consumer (all partitioned queues; an unpartitioned one for KeyOrder)
	routes []string
	limit  int
	dlq    bool
	repl   int
}

func (g *group) queues() []string {
	if g.n == 1 {
		return []string{g.queue}
	}
	qs := make([]string, g.n)
	for i := range qs {
		qs[i] = partitionQueue(g.queue, i)
	}
	return qs
}

// target is where replayed copies are published so that they reach the
// group: the queue itself (default exchange), or the hash exchange.
func (g *group) target() (exchange, key string) {
	if g.n == 1 {
		return "", g.queue
	}
	return hashExchange(g.queue), ""
}

func (g *group) queueArgs(sac bool) amqp.Table {
	args := amqp.Table{"x-queue-type": "quorum"}
	if g.dlq {
		args["x-dead-letter-exchange"] = ""
		args["x-dead-letter-routing-key"] = dlqName(g.queue)
	}
	if g.limit > 0 {
		args["x-delivery-limit"] = int64(g.limit)
	}
	if sac {
		args["x-single-active-consumer"] = true
	}
	if g.repl > 0 {
		args["x-quorum-initial-group-size"] = int64(g.repl)
	}
	return args
}

// declare creates the group's queues (and hash exchange), without binding
// them to the topic.
func (g *group) declare(ch *amqp.Channel) error {
	if err := ch.ExchangeDeclare(exchangeName(g.topic), amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %q: %w", exchangeName(g.topic), err)
	}
	if g.dlq {
		args := amqp.Table{"x-queue-type": "quorum"}
		if g.repl > 0 {
			args["x-quorum-initial-group-size"] = int64(g.repl)
		}
		if _, err := ch.QueueDeclare(dlqName(g.queue), true, false, false, false, args); err != nil {
			return fmt.Errorf("declare dead-letter queue %q: %w", dlqName(g.queue), err)
		}
	}
	if g.n == 1 {
		if _, err := ch.QueueDeclare(g.queue, true, false, false, false, g.queueArgs(g.sac)); err != nil {
			return fmt.Errorf("declare queue %q: %w", g.queue, err)
		}
		return nil
	}
	hx := hashExchange(g.queue)
	if err := ch.ExchangeDeclare(hx, amqp.ExchangeHeaders, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %q: %w", hx, err)
	}
	for i, q := range g.queues() {
		if _, err := ch.QueueDeclare(q, true, false, false, false, g.queueArgs(true)); err != nil {
			return fmt.Errorf("declare queue %q: %w", q, err)
		}
		for s := i; s < maxPartitions; s += g.n {
			if err := ch.QueueBind(q, "", hx, false, amqp.Table{"x-match": "any", hSlot: slotNames[s]}); err != nil {
				return fmt.Errorf("bind queue %q to %q: %w", q, hx, err)
			}
		}
	}
	return nil
}

// bind connects the group to the topic exchange: from then on it receives
// new messages.
func (g *group) bind(ch *amqp.Channel) error {
	keys := g.routes
	if len(keys) == 0 {
		keys = []string{"#"}
	}
	for _, k := range keys {
		var err error
		if g.n == 1 {
			err = ch.QueueBind(g.queue, k, exchangeName(g.topic), false, nil)
		} else {
			err = ch.ExchangeBind(hashExchange(g.queue), k, exchangeName(g.topic), false, nil)
		}
		if err != nil {
			return fmt.Errorf("bind group %q to topic exchange with key %q: %w", g.name, k, err)
		}
	}
	return nil
}

// exists reports whether the group's queue exists.
func (b *Broker) groupExists(ctx context.Context, g *group) (bool, error) {
	err := b.withTopo(ctx, func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclarePassive(g.queues()[0], true, false, false, false, nil)
		return err
	})
	var ae *amqp.Error
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &ae) && ae.Code == amqp.NotFound:
		return false, nil
	}
	return false, fmt.Errorf("rabbitmq: group %q on topic %q: %w", g.name, g.topic, err)
}

// validateRoutes checks SubscribeOptions.Routes: each a valid route that
// is not a wildcard binding key.
func validateRoutes(routes []string) error {
	for _, r := range routes {
		if err := broker.ValidateRoute(r); err != nil {
			return fmt.Errorf("rabbitmq: SubscribeOptions.Routes: %w", err)
		}
		for tok := range strings.SplitSeq(r, ".") {
			if tok == "#" {
				return fmt.Errorf("rabbitmq: SubscribeOptions.Routes: route %q: a '#' token would be a wildcard in a RabbitMQ binding key", r)
			}
		}
	}
	return nil
}
