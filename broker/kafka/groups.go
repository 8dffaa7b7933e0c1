package kafka

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/heraldhq/herald/broker"
)

// DeleteGroup removes the Herald group named group on topic: the Kafka
// consumer group GroupID(topic, group) with its committed offsets, and its
// retry topic RetryTopic(topic, group) with the redeliveries it held.
// The group must have no live member (close its subscriptions first), or
// Kafka refuses with kerr.NonEmptyGroup. Deleting a group that does not
// exist is not an error.
func (b *Broker) DeleteGroup(ctx context.Context, topic, group string) error {
	if err := broker.ValidateName("topic", topic); err != nil {
		return err
	}
	if err := broker.ValidateName("group", group); err != nil {
		return err
	}
	id := GroupID(topic, group)
	resps, err := b.adm.DeleteGroups(ctx, id)
	if err != nil {
		return fmt.Errorf("kafka: delete group %q of topic %q: %w: %w", group, topic, broker.ErrUnavailable, err)
	}
	if r, ok := resps[id]; ok && r.Err != nil && !errors.Is(r.Err, kerr.GroupIDNotFound) {
		return fmt.Errorf("kafka: delete group %q of topic %q: %w", group, topic, r.Err)
	}
	retry := RetryTopic(topic, group)
	tresps, err := b.adm.DeleteTopics(ctx, retry)
	if err != nil {
		return fmt.Errorf("kafka: delete retry topic %q: %w: %w", retry, broker.ErrUnavailable, err)
	}
	b.topics.Delete(retry)
	if r, ok := tresps[retry]; ok && r.Err != nil && !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
		return fmt.Errorf("kafka: delete retry topic %q: %w", retry, r.Err)
	}
	return nil
}
