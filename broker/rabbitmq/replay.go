package rabbitmq

import (
	"context"
	"fmt"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/heraldhq/herald/broker"
)

const (
	replayBatch = 512
	// replayIdle bounds the wait for the next message of the log while
	// replaying: the marker the replay waits for was already confirmed.
	replayIdle = 30 * time.Second
	// replayCatchUp: rounds copying fewer messages than this end the
	// catch-up, and the group is bound to the topic.
	replayCatchUp = 64
	replayRounds  = 10
)

// replay fills the new group g from the topic log, starting at start, and
// then binds it to the topic exchange.
//
// A queue cannot be filled from the past and bound at one instant, so the
// copy runs in rounds: each round publishes a marker into the log and
// copies up to it. When a round copied few messages (the copy caught up
// with the publishers) the group is bound, and a last round copies up to a
// marker published after the bind. Only messages published during that
// last short round can reach the group twice, or after a message published
// later.
func (b *Broker) replay(ctx context.Context, g *group, start broker.Start) error {
	ch, err := b.sub.channel(ctx)
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := ch.Qos(replayBatch*2, 0, false); err != nil {
		return fmt.Errorf("replay: qos: %w", err)
	}
	var offset any
	var minMs int64
	switch start.Kind {
	case broker.StartFirst:
		offset = "first"
	case broker.StartSequence:
		offset = int64(start.Seq - 1)
	case broker.StartTime:
		// Stream timestamps are whole seconds and name chunks: attach a
		// second early and drop what was published before start.Time.
		offset = start.Time.Add(-time.Second)
		minMs = start.Time.UnixMilli()
	default:
		return fmt.Errorf("replay: unknown start %s", start)
	}
	tag := consumerTag()
	in, err := ch.Consume(logName(g.topic), tag, false, false, false, false, amqp.Table{"x-stream-offset": offset})
	if err != nil {
		return fmt.Errorf("replay: consume log %q: %w", logName(g.topic), err)
	}
	r := &replayer{b: b, g: g, ch: ch, in: in, minMs: minMs}
	if len(g.routes) > 0 {
		r.routes = make(map[string]bool, len(g.routes))
		for _, rt := range g.routes {
			r.routes[rt] = true
		}
	}
	bound := false
	for round := 0; ; round++ {
		marker := consumerTag()
		errs := b.sendRaw(ctx, []rawMsg{{key: logName(g.topic), p: amqp.Publishing{Headers: amqp.Table{hMarker: marker}}}})
		if errs[0] != nil {
			return fmt.Errorf("replay: marker: %w", errs[0])
		}
		copied, err := r.copyUntil(ctx, marker)
		if err != nil {
			return err
		}
		if bound {
			return nil
		}
		if copied < replayCatchUp || round >= replayRounds {
			if err := b.withTopo(ctx, g.bind); err != nil {
				return err
			}
			bound = true
		}
	}
}

type replayer struct {
	b      *Broker
	g      *group
	ch     *amqp.Channel
	in     <-chan amqp.Delivery
	routes map[string]bool
	minMs  int64
	batch  []rawMsg
}

// copyUntil copies log messages into the group up to marker and returns
// how many it copied.
func (r *replayer) copyUntil(ctx context.Context, marker string) (int, error) {
	copied := 0
	idle := time.NewTimer(replayIdle)
	defer idle.Stop()
	var last uint64
	flush := func() error {
		if len(r.batch) > 0 {
			for i, err := range r.b.sendRaw(ctx, r.batch) {
				if err != nil {
					return fmt.Errorf("replay: copy log message %v into group: %w", r.batch[i].p.Headers[hSeq], err)
				}
			}
			copied += len(r.batch)
			r.batch = r.batch[:0]
		}
		if last != 0 {
			if err := r.ch.Ack(last, true); err != nil {
				return fmt.Errorf("replay: ack log: %w", err)
			}
			last = 0
		}
		return nil
	}
	for {
		var ad amqp.Delivery
		var ok bool
		select {
		case <-ctx.Done():
			return copied, fmt.Errorf("replay: %w", ctx.Err())
		case <-idle.C:
			return copied, fmt.Errorf("%w: replay: no message from log %q for %v while waiting for the replay marker", broker.ErrUnavailable, logName(r.g.topic), replayIdle)
		case ad, ok = <-r.in:
		}
		if !ok {
			return copied, fmt.Errorf("%w: replay: log consumer closed", broker.ErrUnavailable)
		}
		idle.Reset(replayIdle)
		last = ad.DeliveryTag
		if m, isMarker := ad.Headers[hMarker]; isMarker {
			if m == marker {
				return copied, flush()
			}
			continue
		}
		if r.keep(&ad) {
			r.batch = append(r.batch, r.copyOf(&ad))
		}
		if len(r.batch) >= replayBatch {
			if err := flush(); err != nil {
				return copied, err
			}
		}
	}
}

func (r *replayer) keep(ad *amqp.Delivery) bool {
	if r.routes != nil && !r.routes[ad.RoutingKey] {
		return false
	}
	if r.minMs != 0 {
		if ts, ok := ad.Headers[hTime]; ok {
			return intHeader(ts) >= r.minMs
		}
		return !ad.Timestamp.IsZero() && ad.Timestamp.UnixMilli() >= r.minMs
	}
	return true
}

func (r *replayer) copyOf(ad *amqp.Delivery) rawMsg {
	hd := make(amqp.Table, len(ad.Headers)+2)
	for k, v := range ad.Headers {
		if !strings.HasPrefix(k, "x-") && k != hTag {
			hd[k] = v
		}
	}
	hd[hRoute] = ad.RoutingKey
	hd[hSeq] = intHeader(ad.Headers["x-stream-offset"]) + 1
	if _, ok := hd[hSlot]; !ok {
		k, _ := hd[hKey].(string)
		hd[hSlot] = slotNames[broker.Partition(k, maxPartitions)]
	}
	ex, key := r.g.target()
	if key == "" {
		key = ad.RoutingKey
	}
	return rawMsg{exchange: ex, key: key, p: amqp.Publishing{
		Headers: hd, ContentType: ad.ContentType, MessageId: ad.MessageId, Timestamp: ad.Timestamp, Body: ad.Body,
	}}
}
