package kafka

import (
	"context"
	"fmt"
	"strconv"
	"time"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/broker"
)

// delivery is one hand-out of a record. It stays valid for settling while
// its token is the record's current one.
type delivery struct {
	s       *subscription
	e       *entry
	token   uint32
	attempt int
	msg     broker.Message
}

// Message returns the delivered message. Topic is the subscribed topic,
// also for a redelivery read from the retry topic.
func (d *delivery) Message() *broker.Message { return &d.msg }

// Attempt is 1 on the first delivery; redeliveries after an ack wait, a
// nack, a retry-topic round trip or a move to another member count up.
func (d *delivery) Attempt() int { return d.attempt }

// Sequence is partition<<48 | (offset+1) of the record in the topic; on a
// single-partition topic, offset+1.
func (d *delivery) Sequence() uint64 { return d.e.seq }

// Timestamp is the record's timestamp (CreateTime unless the topic is
// configured with LogAppendTime), in millisecond resolution.
func (d *delivery) Timestamp() time.Time { return d.e.ts }

// Ack settles the delivery. Its offset is committed by the next commit
// (WithCommitInterval); with ConfirmAcks, Ack commits now and returns once
// the commit recording it succeeded.
func (d *delivery) Ack(ctx context.Context) error {
	ch, err := d.s.settle(d, settleAck)
	if ch == nil || err != nil {
		return err
	}
	d.s.kickCommit()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Nack asks for redelivery. Nack(0) redelivers from memory at once (the
// record keeps its place below the commit point). A positive delay moves
// the record to the group's retry topic with its due time and attempt
// count; the group delivers it once due, and the original is settled once
// the retry record is acknowledged.
func (d *delivery) Nack(ctx context.Context, delay time.Duration) error {
	if delay <= 0 {
		_, err := d.s.settle(d, settleNackNow)
		return err
	}
	return d.s.nackLater(ctx, d, delay)
}

// Term settles the delivery like Ack: Kafka keeps no per-message state to
// mark it failed. The layer above writes it to its dead-letter topic;
// reason is not stored here.
func (d *delivery) Term(ctx context.Context, reason string) error { return d.Ack(ctx) }

// InProgress restarts the ack wait.
func (d *delivery) InProgress(ctx context.Context) error {
	_, err := d.s.settle(d, settleProgress)
	return err
}

// String describes the delivery for logs.
func (d *delivery) String() string {
	return fmt.Sprintf("kafka delivery %s/%d@%d attempt %d", d.e.rec.Topic, d.e.rec.Partition, d.e.rec.Offset, d.attempt)
}

// decodeMessage turns a record into a Message of topic: the route and id
// from their headers, the key, the other headers and the value.
//
// Key, Route, ID and Data share the record's fetched bytes instead of
// copying them, as franz-go's records do: nothing writes to those bytes
// after the fetch (franz-go reuses them only with kgo.WithPools, which
// the adapter does not set and WithConsumerOptions must not add).
func decodeMessage(r *kgo.Record, topic string) broker.Message {
	var m broker.Message
	decodeInto(&m, r, topic)
	return m
}

func decodeInto(m *broker.Message, r *kgo.Record, topic string) {
	m.Topic, m.Data, m.Key = topic, r.Value, bytesString(r.Key)
	user := 0
	for _, h := range r.Headers {
		switch h.Key {
		case HeaderRoute:
			m.Route = bytesString(h.Value)
		case HeaderID:
			m.ID = bytesString(h.Value)
		case HeaderAttempt, HeaderDue, HeaderSeq, HeaderTime:
		default:
			user++
		}
	}
	if user > 0 {
		m.Header = userHeaders(r, user)
	}
}

func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

func userHeaders(r *kgo.Record, n int) map[string]string {
	h := make(map[string]string, n)
	for _, hd := range r.Headers {
		switch hd.Key {
		case HeaderRoute, HeaderID, HeaderAttempt, HeaderDue, HeaderSeq, HeaderTime:
		default:
			h[hd.Key] = string(hd.Value)
		}
	}
	return h
}

func headerValue(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return bytesString(h.Value)
		}
	}
	return ""
}

type retryHeaders struct {
	attempt int
	due     int64
	seq     uint64
	ts      time.Time
}

// parseRetry reads the retry headers of a record of a retry topic. A
// missing or malformed header gets a safe value: attempt 2 (it was
// nacked at least once), due now, the record's own timestamp.
func parseRetry(r *kgo.Record) retryHeaders {
	h := retryHeaders{attempt: 2, ts: r.Timestamp}
	for _, hd := range r.Headers {
		v := string(hd.Value)
		switch hd.Key {
		case HeaderAttempt:
			if n, err := strconv.Atoi(v); err == nil && n >= 1 {
				h.attempt = n
			}
		case HeaderDue:
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				h.due = n
			}
		case HeaderSeq:
			if n, err := strconv.ParseUint(v, 10, 64); err == nil {
				h.seq = n
			}
		case HeaderTime:
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				h.ts = time.UnixMilli(n)
			}
		}
	}
	return h
}
