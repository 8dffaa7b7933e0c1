package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/heraldhq/herald/broker"
)

// The catalog.
//
// AMQP 0-9-1 cannot list exchanges or queues (only the management plugin
// can, over HTTP). So that the operations tools find Herald's topics and
// groups, the adapter appends one message per topic and per group it
// declares, once per process, to the stream "herald/catalog"; the
// inspector reads it back and looks each name up. A name whose queues
// were deleted is passed over.
const (
	catalogName = "herald/catalog"
	hCatTopic   = "herald-catalog-topic"
	hCatGroup   = "herald-catalog-group"
	hCatGone    = "herald-catalog-gone"
	// readIdle bounds the wait for the next message of a stream while
	// reading it up to a marker that was already confirmed.
	readIdle = 30 * time.Second
)

var _ broker.Inspector = (*Broker)(nil)

// note records topic (and group, when not empty) in the catalog, once per
// adapter. It needs the topic log (streams); without it nothing is noted.
func (b *Broker) note(ctx context.Context, topic, group string) {
	if !b.o.topicLog {
		return
	}
	key := topic + "\x00" + group
	if _, ok := b.noted.Load(key); ok {
		return
	}
	err := b.ensureCatalog(ctx)
	if err == nil {
		hd := amqp.Table{hCatTopic: topic}
		if group != "" {
			hd[hCatGroup] = group
		}
		err = b.sendRaw(ctx, []rawMsg{{key: catalogName, p: amqp.Publishing{Headers: hd}}})[0]
	}
	if err != nil {
		b.o.log.Warn("rabbitmq: catalog entry not written; herald lag and dlq may not list it", "topic", topic, "group", group, "error", err)
		return
	}
	b.noted.Store(key, struct{}{})
}

// forget records in the catalog that topic (with its groups), or group
// of topic, was deleted.
func (b *Broker) forget(ctx context.Context, topic, group string) {
	if !b.o.topicLog {
		return
	}
	b.noted.Range(func(k, _ any) bool {
		if key := k.(string); key == topic+"\x00"+group || group == "" && strings.HasPrefix(key, topic+"\x00") {
			b.noted.Delete(k)
		}
		return true
	})
	err := b.ensureCatalog(ctx)
	if err == nil {
		hd := amqp.Table{hCatTopic: topic, hCatGone: true}
		if group != "" {
			hd[hCatGroup] = group
		}
		err = b.sendRaw(ctx, []rawMsg{{key: catalogName, p: amqp.Publishing{Headers: hd}}})[0]
	}
	if err != nil {
		b.o.log.Warn("rabbitmq: catalog entry of a deletion not written", "topic", topic, "group", group, "error", err)
	}
}

func (b *Broker) ensureCatalog(ctx context.Context) error {
	if _, ok := b.noted.Load(""); ok {
		return nil
	}
	err := b.withTopo(ctx, func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(catalogName, true, false, false, false, amqp.Table{"x-queue-type": "stream", "x-max-length-bytes": int64(64 << 20)})
		return err
	})
	if err != nil {
		return fmt.Errorf("declare catalog stream %q: %w", catalogName, err)
	}
	b.noted.Store("", struct{}{})
	return nil
}

// catalog returns the noted topics, each with its noted groups.
func (b *Broker) catalog(ctx context.Context) (map[string]map[string]bool, error) {
	out := map[string]map[string]bool{}
	if !b.o.topicLog {
		return out, nil
	}
	if err := b.ensureCatalog(ctx); err != nil {
		return nil, err
	}
	err := b.readStream(ctx, catalogName, "first", func(ad *amqp.Delivery) bool {
		t, _ := ad.Headers[hCatTopic].(string)
		if t == "" {
			return true
		}
		g, _ := ad.Headers[hCatGroup].(string)
		if gone, _ := ad.Headers[hCatGone].(bool); gone {
			if g == "" {
				delete(out, t)
			} else if out[t] != nil {
				delete(out[t], g)
			}
			return true
		}
		if out[t] == nil {
			out[t] = map[string]bool{}
		}
		if g != "" {
			out[t][g] = true
		}
		return true
	})
	return out, err
}

// readStream calls fn with the messages of stream from offset on (an
// x-stream-offset value), up to a marker it publishes first, until fn
// returns false. Markers are not passed to fn.
func (b *Broker) readStream(ctx context.Context, stream string, offset any, fn func(*amqp.Delivery) bool) error {
	ch, err := b.sub.channel(ctx)
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := ch.Qos(512, 0, false); err != nil {
		return fmt.Errorf("read %q: qos: %w", stream, err)
	}
	marker := consumerTag()
	if err := b.sendRaw(ctx, []rawMsg{{key: stream, p: amqp.Publishing{Headers: amqp.Table{hMarker: marker}}}})[0]; err != nil {
		return fmt.Errorf("read %q: marker: %w", stream, err)
	}
	tag := consumerTag()
	in, err := ch.Consume(stream, tag, false, false, false, false, amqp.Table{"x-stream-offset": offset})
	if err != nil {
		return fmt.Errorf("read %q: %w", stream, err)
	}
	idle := time.NewTimer(readIdle)
	defer idle.Stop()
	n := 0
	for {
		var ad amqp.Delivery
		var ok bool
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-idle.C:
			return fmt.Errorf("%w: read %q: no message for %v while waiting for the end marker", broker.ErrUnavailable, stream, readIdle)
		case ad, ok = <-in:
		}
		if !ok {
			return fmt.Errorf("%w: read %q: consumer closed", broker.ErrUnavailable, stream)
		}
		idle.Reset(readIdle)
		if n++; n%256 == 0 {
			if err := ch.Ack(ad.DeliveryTag, true); err != nil {
				return fmt.Errorf("read %q: ack: %w", stream, err)
			}
		}
		if m, isMarker := ad.Headers[hMarker]; isMarker {
			if m == marker {
				return nil
			}
			continue
		}
		if !fn(&ad) {
			return nil
		}
	}
}

// queueState looks q up: whether it exists, its ready messages and
// consumers.
func (b *Broker) queueState(ctx context.Context, q string) (found bool, msgs, consumers int, err error) {
	err = b.withTopo(ctx, func(ch *amqp.Channel) error {
		st, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
		msgs, consumers = st.Messages, st.Consumers
		return err
	})
	if isNotFound(err) {
		return false, 0, 0, nil
	}
	if err != nil {
		return false, 0, 0, fmt.Errorf("rabbitmq: queue %q: %w", q, err)
	}
	return true, msgs, consumers, nil
}

// existingGroup returns the layout of the existing group, or nil.
func (b *Broker) existingGroup(ctx context.Context, topic, name string) (*group, error) {
	gq := groupQueue(topic, name)
	g := &group{topic: topic, name: name, queue: gq, n: 1, limit: b.o.deliveryLimit, dlq: b.o.deadLetter}
	found, _, _, err := b.queueState(ctx, gq)
	if err != nil || found {
		return g, err
	}
	n := 0
	for ; n < maxPartitions; n++ {
		found, _, _, err := b.queueState(ctx, partitionQueue(gq, n))
		if err != nil {
			return nil, err
		}
		if !found {
			break
		}
	}
	if n == 0 {
		return nil, nil
	}
	g.n, g.sac = n, true
	return g, nil
}

// TopicStates implements broker.Inspector for the topics in the catalog
// that still exist. Messages counts the topic log; Partitions is 1 (the
// partitioning of a topic lives in its groups' queues).
func (b *Broker) TopicStates(ctx context.Context) ([]broker.TopicState, error) {
	cat, err := b.catalog(ctx)
	if err != nil {
		return nil, err
	}
	out := []broker.TopicState{}
	for _, t := range slices.Sorted(maps.Keys(cat)) {
		found, msgs, _, err := b.queueState(ctx, logName(t))
		if err != nil {
			return nil, err
		}
		if found {
			out = append(out, broker.TopicState{Topic: t, Partitions: 1, Messages: uint64(msgs), Retention: b.topicConfig(t)})
		}
	}
	return out, nil
}

// GroupStates implements broker.Inspector for the groups in the catalog
// that still exist. Pending is the messages ready in the group's queues;
// RabbitMQ tells unacknowledged messages only through its management API,
// so InFlight is 0.
func (b *Broker) GroupStates(ctx context.Context, topic string) ([]broker.GroupState, error) {
	cat, err := b.catalog(ctx)
	if err != nil {
		return nil, err
	}
	out := []broker.GroupState{}
	for _, t := range slices.Sorted(maps.Keys(cat)) {
		if topic != "" && t != topic {
			continue
		}
		for _, name := range slices.Sorted(maps.Keys(cat[t])) {
			g, err := b.existingGroup(ctx, t, name)
			if err != nil {
				return nil, err
			}
			if g == nil {
				continue
			}
			row := broker.GroupState{Topic: t, Group: name}
			for _, q := range g.queues() {
				_, msgs, consumers, err := b.queueState(ctx, q)
				if err != nil {
					return nil, err
				}
				row.Pending += uint64(msgs)
				row.Members = max(row.Members, consumers)
			}
			out = append(out, row)
		}
	}
	return out, nil
}

// ReadTopic implements broker.Inspector by reading the topic log. It needs
// the topic log (WithTopicLog, the default).
func (b *Broker) ReadTopic(ctx context.Context, topic string, after uint64, fn func(*broker.StoredMessage) bool) error {
	if !b.o.topicLog {
		return fmt.Errorf("rabbitmq: read topic %q: needs the topic log (WithTopicLog(true)): %w", topic, errors.ErrUnsupported)
	}
	found, _, _, err := b.queueState(ctx, logName(topic))
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("rabbitmq: read topic %q: no log stream %q: %w", topic, logName(topic), broker.ErrInvalidTopic)
	}
	var offset any = "first"
	if after > 0 {
		offset = int64(after)
	}
	return b.readStream(ctx, logName(topic), offset, func(ad *amqp.Delivery) bool {
		seq := uint64(intHeader(ad.Headers["x-stream-offset"])) + 1
		if seq <= after {
			return true
		}
		var d delivery
		d.decode(topic, ad, &b.o)
		return fn(&broker.StoredMessage{Message: d.msg, Seq: seq, Time: d.at})
	})
}

// MoveGroup implements broker.Inspector. An existing group without live
// members is emptied and refilled from the topic log from to on, then
// keeps its binding: messages published while it is refilled can reach it
// twice. A group to create is declared (key-ordered, as the router's
// groups are) and filled from the log before it is bound. Both need the
// topic log; to a sequence or a time they copy every route (a group bound
// to some routes only receives the others once).
func (b *Broker) MoveGroup(ctx context.Context, topic, name string, to broker.Start, create bool) (uint64, error) {
	if err := broker.ValidateName("topic", topic); err != nil {
		return 0, err
	}
	if err := broker.ValidateName("group", name); err != nil {
		return 0, err
	}
	if to.Kind != broker.StartNew && !b.o.topicLog {
		return 0, fmt.Errorf("rabbitmq: move group %q of topic %q to %s: needs the topic log (WithTopicLog(true)): %w", name, topic, to, errors.ErrUnsupported)
	}
	g, err := b.existingGroup(ctx, topic, name)
	if err != nil {
		return 0, err
	}
	switch {
	case create && g != nil:
		return 0, fmt.Errorf("rabbitmq: group %q of topic %q: %w", name, topic, broker.ErrGroupExists)
	case !create && g == nil:
		return 0, fmt.Errorf("rabbitmq: group %q of topic %q: %w", name, topic, broker.ErrGroupNotFound)
	}
	if create {
		cfg := b.topicConfig(topic)
		g = &group{topic: topic, name: name, queue: groupQueue(topic, name), n: max(cfg.Partitions, 1), sac: true,
			limit: b.o.deliveryLimit, dlq: b.o.deadLetter, repl: b.replicas(cfg)}
		if err := b.ensureTopic(ctx, topic); err != nil {
			return 0, err
		}
		if err := b.withTopo(ctx, g.declare); err != nil {
			return 0, fmt.Errorf("rabbitmq: group %q of topic %q: %w", name, topic, err)
		}
		b.note(ctx, topic, name)
	} else {
		for _, q := range g.queues() {
			_, _, consumers, err := b.queueState(ctx, q)
			if err != nil {
				return 0, err
			}
			if consumers > 0 {
				return 0, fmt.Errorf("rabbitmq: group %q of topic %q has %d consumers on %q: %w", name, topic, consumers, q, broker.ErrGroupBusy)
			}
		}
		for _, q := range g.queues() {
			if err := b.withTopo(ctx, func(ch *amqp.Channel) error { _, err := ch.QueuePurge(q, false); return err }); err != nil {
				return 0, fmt.Errorf("rabbitmq: purge queue %q: %w", q, err)
			}
		}
	}
	if to.Kind == broker.StartNew {
		err = b.withTopo(ctx, g.bind)
	} else {
		err = b.replay(ctx, g, to)
	}
	if err != nil {
		return 0, fmt.Errorf("rabbitmq: move group %q of topic %q to %s: %w", name, topic, to, err)
	}
	b.o.log.Info("group moved", "topic", topic, "group", name, "to", to.String(), "create", create)
	var seq uint64
	if to.Kind == broker.StartSequence {
		seq = to.Seq
	}
	return seq, nil
}
