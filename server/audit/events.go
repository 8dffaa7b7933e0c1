package audit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
)

// TopicReader is what the indexer reads the topics of a broker other than
// JetStream through: the listing and reading half of broker.Inspector.
type TopicReader interface {
	TopicStates(ctx context.Context) ([]broker.TopicState, error)
	ReadTopic(ctx context.Context, topic string, after uint64, fn func(*broker.StoredMessage) bool) error
}

// WithTopicReader makes the indexer also index the topics of r, the Kafka
// broker events live on (herald serve --broker kafka://), every poll
// interval (WithPollInterval). name prefixes the positions the store
// keeps for r's topics ("kafka"); binding names the CloudEvents headers
// of its messages. Sequences must be Kafka's: partition<<48 | offset+1.
// Positions are kept per partition as "<name>:<topic>/<partition>"; a
// topic deleted and created again is not noticed, and is indexed from the
// position the old one reached.
func WithTopicReader(name string, r TopicReader, binding event.Binding) Option {
	return func(ix *Indexer) { ix.tr, ix.trName, ix.trBinding = r, name, binding }
}

// trCreated is the creation time recorded with the positions of a
// TopicReader's partitions, which have none.
var trCreated = time.Unix(0, 0).UTC()

// pollTopics indexes the topics of the TopicReader until ctx is done.
func (ix *Indexer) pollTopics(ctx context.Context) {
	sent := map[string]uint64{} // last sequence handed to the writer, by position name
	ix.mu.Lock()
	for k, p := range ix.pos {
		sent[k] = p.Seq
	}
	ix.mu.Unlock()
	t := time.NewTicker(ix.poll)
	defer t.Stop()
	for {
		if err := ix.readTopics(ctx, sent); err != nil && ctx.Err() == nil {
			ix.log.Warn("audit: read topics", "broker", ix.trName, "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// readTopics hands every message stored after the positions in sent to
// the writer, partition by partition.
func (ix *Indexer) readTopics(ctx context.Context, sent map[string]uint64) error {
	states, err := ix.tr.TopicStates(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, st := range states {
		if st.Messages == 0 {
			continue
		}
		dlq := consumer.IsDeadLetterTopic(st.Topic)
		for p := range uint64(max(st.Partitions, 1)) {
			key := ix.trName + ":" + st.Topic + "/" + strconv.FormatUint(p, 10)
			after, ok := sent[key]
			if !ok {
				after = p << 48 // the partition's start
			}
			err := ix.tr.ReadTopic(ctx, st.Topic, after, func(m *broker.StoredMessage) bool {
				if m.Seq>>48 != p {
					return false // the next partition: its own turn
				}
				if ix.limiter != nil {
					ix.lastGrowth.Store(time.Now().UnixNano())
					if ix.limiter.Wait(ctx) != nil {
						return false
					}
				}
				select {
				case ix.ch <- item{stream: key, created: trCreated, rec: ix.storedRecord(st.Topic, dlq, m)}:
					sent[key] = m.Seq
					return true
				case <-ctx.Done():
					return false
				}
			})
			if err != nil && ctx.Err() == nil {
				errs = append(errs, fmt.Errorf("topic %q partition %d: %w", st.Topic, p, err))
			}
			if ctx.Err() != nil {
				return nil
			}
		}
	}
	return errors.Join(errs...)
}

// storedRecord reads m's attributes with the TopicReader's binding.
func (ix *Indexer) storedRecord(topic string, dlq bool, m *broker.StoredMessage) Record {
	r := Record{
		Topic: topic, Seq: m.Seq, Stored: m.Time.UTC(), Time: m.Time.UTC(),
		ID: m.ID, Type: m.Route, DeadLetter: dlq, PayloadSize: len(m.Data),
	}
	if e, err := ix.trBinding.Decode(m.Header, m.Data); err == nil {
		r.ID, r.Type, r.Source, r.Subject = e.ID, e.Type, e.Source, e.Subject
		r.CorrelationID, r.CausationID, r.ContentType = e.CorrelationID, e.CausationID, e.DataContentType
		if !e.Time.IsZero() {
			r.Time = e.Time.UTC()
		}
	}
	if v := m.Header[consumer.HeaderRedrives]; v != "" {
		r.Redrives, _ = strconv.Atoi(v)
	}
	if len(m.Data) <= ix.maxPayload {
		r.Payload = m.Data
		if r.Payload == nil {
			r.Payload = []byte{}
		}
	}
	return r
}
