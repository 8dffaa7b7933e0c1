package rabbitmq

import (
	"context"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/heraldhq/herald/broker"
)

// DeleteGroup removes the group named group on topic: its queue (or
// partition queues and hash exchange) and its dead-letter queue, with the
// messages they held. Subscriptions still open on the group lose their
// queue; close them first. Delay queues expire on their own. Deleting a
// group that does not exist is not an error.
func (b *Broker) DeleteGroup(ctx context.Context, topic, group string) error {
	if err := broker.ValidateName("topic", topic); err != nil {
		return err
	}
	if err := broker.ValidateName("group", group); err != nil {
		return err
	}
	gq := groupQueue(topic, group)
	for _, q := range []string{gq, dlqName(gq)} {
		if _, err := b.deleteQueue(ctx, q); err != nil {
			return err
		}
	}
	// Partition queues are numbered from 0 without gaps.
	for i := range maxPartitions {
		found, err := b.deleteQueue(ctx, partitionQueue(gq, i))
		if err != nil {
			return err
		}
		if !found {
			break
		}
	}
	x := hashExchange(gq)
	if err := b.withTopo(ctx, func(ch *amqp.Channel) error { return ch.ExchangeDelete(x, false, false) }); err != nil && !isNotFound(err) {
		return fmt.Errorf("rabbitmq: delete group %q of topic %q: exchange %q: %w", group, topic, x, err)
	}
	b.forget(ctx, topic, group)
	return nil
}

// deleteQueue deletes q and reports whether it existed.
func (b *Broker) deleteQueue(ctx context.Context, q string) (bool, error) {
	// A missing queue closes the channel it was looked up on, so the
	// lookup and the deletion get channels of their own.
	err := b.withTopo(ctx, func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
		return err
	})
	if isNotFound(err) {
		return false, nil
	}
	if err == nil {
		err = b.withTopo(ctx, func(ch *amqp.Channel) error {
			_, err := ch.QueueDelete(q, false, false, false)
			return err
		})
	}
	if err != nil && !isNotFound(err) {
		return false, fmt.Errorf("rabbitmq: delete queue %q: %w", q, err)
	}
	return true, nil
}
