package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
)

// Headers of JetStream's atomic batch publish (server 2.12 and later).
const (
	batchIDHeader     = "Nats-Batch-Id"
	batchSeqHeader    = "Nats-Batch-Sequence"
	batchCommitHeader = "Nats-Batch-Commit"
)

// maxAtomicBatch is the server's default cap on messages per atomic batch.
const maxAtomicBatch = 1000

// Fast batches: the server learns a message's place in its batch from its
// reply subject, <inbox>.<batch id>.<flow>.<gap mode>.<batch seq>.<op>.$FI,
// answers flow control every <flow> messages (at most 500) and the batch
// once, on its commit.
const (
	fastBatchFlow    = "500"
	fastBatchGapFail = "fail" // a missing message ends the batch
	fastBatchSuffix  = ".$FI"
	fastOpStart      = ".0"
	fastOpAppend     = ".1"
	fastOpCommit     = ".2"
)

// committer group-commits the messages published to one stream: messages
// from concurrent Publish calls queue up while a batch is being committed
// and go together in the next one, as one JetStream atomic batch, which
// the server writes and (with sync durability) fsyncs once, or as one fast
// batch, which the server answers once. One batch per stream is in flight
// at a time, so batches commit in the order they were queued and the
// messages of a key keep their order, also when a batch falls back to
// publishing its messages one by one.
type committer struct {
	b  *Broker
	si *streamInfo

	// With fast batches: the answers to the batches come on inbox.>.
	inbox   string
	sub     *nats.Subscription
	replies chan *nats.Msg

	mu     sync.Mutex
	queue  []*gcMsg
	closed bool
	kick   chan struct{} // one token: the queue has something
	done   chan struct{} // closed when the loop returned

	seq atomic.Uint64 // batch ids are "<prefix>-<seq>"
}

// gcMsg is one queued message and the call waiting for it.
type gcMsg struct {
	nm   *nats.Msg
	call *gcCall
	i    int // index in the call's messages
}

// gcCall is a Publish call waiting for its queued messages.
type gcCall struct {
	left atomic.Int32
	errs []error // written by the committer, read after done
	done chan struct{}
}

func (c *gcCall) settle(i int, err error) {
	c.errs[i] = err
	if c.left.Add(-1) == 0 {
		close(c.done)
	}
}

func newCommitter(b *Broker, si *streamInfo) (*committer, error) {
	c := &committer{b: b, si: si, kick: make(chan struct{}, 1), done: make(chan struct{})}
	if si.batched {
		c.inbox = b.nc.NewRespInbox()
		c.replies = make(chan *nats.Msg, 1024)
		sub, err := b.nc.ChanSubscribe(c.inbox+".>", c.replies)
		if err != nil {
			return nil, fmt.Errorf("natsjs: topic %q: group commit: %w", si.topic, err)
		}
		c.sub = sub
	}
	go c.loop()
	return c, nil
}

// enqueue adds the call's messages to the queue; it returns false when the
// committer is closed.
func (c *committer) enqueue(ms []*gcMsg) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	c.queue = append(c.queue, ms...)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return true
}

// close stops the loop once the queue is empty and waits for it.
func (c *committer) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	<-c.done
}

func (c *committer) loop() {
	defer close(c.done)
	if c.sub != nil {
		defer func() { _ = c.sub.Unsubscribe() }()
	}
	var batch []*gcMsg
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			closed := c.closed
			c.mu.Unlock()
			if closed {
				return
			}
			// No linger: a lone message goes at once; under load the
			// queue fills while the previous batch is being committed.
			<-c.kick
			continue
		}
		n := min(len(c.queue), maxAtomicBatch)
		batch = append(batch[:0], c.queue[:n]...)
		clear(c.queue[:n])
		c.queue = c.queue[n:]
		if len(c.queue) == 0 {
			c.queue = c.queue[:0:0] // let go of a large backing array
		}
		c.mu.Unlock()
		c.commit(batch)
		clear(batch)
	}
}

// batchAck is the server's answer to a batch commit.
type batchAck struct {
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
	Stream string `json:"stream"`
	Seq    uint64 `json:"seq"`
	Batch  string `json:"batch"`
	Count  int    `json:"count"`
}

// commit sends batch as one atomic batch; if the server refuses it (a
// duplicate id inside, no stream leader, a timeout) it publishes the
// messages one by one, each deduplicated by its id, so every message gets
// its own outcome.
func (c *committer) commit(batch []*gcMsg) {
	if len(batch) > 1 && c.sub != nil {
		n, err := c.commitFast(batch)
		for _, m := range batch[:n] {
			m.call.settle(m.i, nil)
		}
		if n == len(batch) {
			c.b.batches.Add(1)
			return
		}
		c.b.log.Debug("natsjs: fast batch stopped part way, publishing the rest message by message", "stream", c.si.name,
			"messages", len(batch), "confirmed", n, "error", err)
		batch = batch[n:]
	} else if len(batch) > 1 {
		err := c.commitAtomic(batch)
		for _, m := range batch {
			delete(m.nm.Header, batchIDHeader)
			delete(m.nm.Header, batchSeqHeader)
			delete(m.nm.Header, batchCommitHeader)
		}
		if err == nil {
			c.b.batches.Add(1)
			for _, m := range batch {
				m.call.settle(m.i, nil)
			}
			return
		}
		c.b.log.Debug("natsjs: atomic batch refused, publishing its messages one by one", "stream", c.si.name, "messages", len(batch), "error", err)
	}
	// One publish timeout for the rest of the batch, not one per message:
	// with the stream gone or leaderless, a thousand messages retried in
	// turn would hold up the next batches for a thousand timeouts.
	rctx, cancel := context.WithTimeout(context.Background(), c.b.pubWait)
	defer cancel()
	gone := false
	futs := make([]jetstream.PubAckFuture, len(batch))
	for i, m := range batch {
		f, err := c.b.js.PublishMsgAsync(m.nm)
		if err != nil {
			m.call.settle(m.i, publishErr(c.si.topic, len(m.nm.Data), err))
			continue
		}
		futs[i] = f
	}
	for i, f := range futs {
		if f == nil {
			continue
		}
		var err error
		select {
		case <-f.Ok():
		case err = <-f.Err():
			if errors.Is(err, jetstream.ErrNoStreamResponse) {
				err = c.b.republish(rctx, f.Msg())
				if err != nil && !gone {
					gone = true
					c.b.checkGone(c.si.topic)
				}
			}
		}
		if err != nil {
			err = publishErr(c.si.topic, len(batch[i].nm.Data), err)
		}
		batch[i].call.settle(batch[i].i, err)
	}
}

func (c *committer) commitAtomic(batch []*gcMsg) error {
	id := c.si.batchPrefix + strconv.FormatUint(c.seq.Add(1), 10)
	last := len(batch) - 1
	for i, m := range batch {
		if m.nm.Header == nil {
			m.nm.Header = nats.Header{}
		}
		m.nm.Header[batchIDHeader] = []string{id}
		m.nm.Header[batchSeqHeader] = []string{strconv.Itoa(i + 1)}
		if i == last {
			m.nm.Header[batchCommitHeader] = []string{"1"}
			break
		}
		// Only the commit is answered: the batch costs one reply.
		if err := c.b.nc.PublishMsg(m.nm); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.b.pubWait)
	defer cancel()
	reply, err := c.b.nc.RequestMsgWithContext(ctx, batch[last].nm)
	if err != nil {
		return err
	}
	var ack batchAck
	if err := json.Unmarshal(reply.Data, &ack); err != nil {
		return fmt.Errorf("batch %s: unreadable reply %q: %w", id, reply.Data, err)
	}
	if ack.Error != nil {
		return fmt.Errorf("batch %s: %s (error code %d)", id, ack.Error.Description, ack.Error.ErrCode)
	}
	if ack.Count != len(batch) {
		return fmt.Errorf("batch %s: server stored %d of %d messages", id, ack.Count, len(batch))
	}
	return nil
}

// fastReply is an answer to a fast batch: flow control (Type "ack"), a
// gap or a message's error ("gap", "err"), or, without a Type, the
// batch's publish acknowledgement.
type fastReply struct {
	Type  string `json:"type"`
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
	Batch string `json:"batch"`
	Count int    `json:"count"`
}

// commitFast sends batch as one fast batch and returns how many of its
// messages, from the first, the server confirmed stored (deduplicated
// ones included). With gap mode "fail" the server stores a batch's
// messages in order and ends the batch at the first one it refuses, so
// the messages after the count were not stored by this batch.
func (c *committer) commitFast(batch []*gcMsg) (int, error) {
	// A message over the connection's limit would leave a gap in the
	// batch: such batches go message by message, where it gets its error.
	limit := c.b.nc.MaxPayload()
	for _, m := range batch {
		size := len(m.nm.Data) + len(m.nm.Subject)
		for k, vs := range m.nm.Header {
			for _, v := range vs {
				size += len(k) + len(v) + 4
			}
		}
		if int64(size) > limit {
			return 0, nats.ErrMaxPayload
		}
	}
	id := c.si.batchPrefix + strconv.FormatUint(c.seq.Add(1), 10)
	base := c.inbox + "." + id + "." + fastBatchFlow + "." + fastBatchGapFail + "."
	last := len(batch) - 1
	for i, m := range batch {
		op := fastOpAppend
		switch i {
		case 0:
			op = fastOpStart
		case last:
			op = fastOpCommit
		}
		m.nm.Reply = base + strconv.Itoa(i+1) + op + fastBatchSuffix
		err := c.b.nc.PublishMsg(m.nm)
		m.nm.Reply = ""
		if err != nil {
			return 0, err
		}
	}
	mine := "." + id + "."
	timer := time.NewTimer(c.b.pubWait)
	defer timer.Stop()
	for {
		select {
		case r := <-c.replies:
			if !strings.Contains(r.Subject, mine) {
				continue // an answer to an earlier batch that timed out
			}
			var a fastReply
			if err := json.Unmarshal(r.Data, &a); err != nil {
				return 0, fmt.Errorf("batch %s: unreadable reply %q: %w", id, r.Data, err)
			}
			if a.Type != "" {
				continue // flow control, or a message's error: the acknowledgement counts
			}
			if a.Error != nil {
				// The first message was refused: nothing of the batch is stored.
				return 0, fmt.Errorf("batch %s: %s (error code %d)", id, a.Error.Description, a.Error.ErrCode)
			}
			if a.Count < 0 || a.Count > len(batch) {
				return 0, fmt.Errorf("batch %s: server confirmed %d of %d messages", id, a.Count, len(batch))
			}
			if a.Count < len(batch) {
				return a.Count, fmt.Errorf("batch %s: server stored %d of %d messages", id, a.Count, len(batch))
			}
			return a.Count, nil
		case <-timer.C:
			return 0, fmt.Errorf("batch %s: %w", id, nats.ErrTimeout)
		}
	}
}

func publishErr(topic string, size int, err error) error {
	if errors.Is(err, nats.ErrMaxPayload) {
		err = fmt.Errorf("%w: %d bytes: %w", broker.ErrInvalidMessage, size, err)
	}
	return fmt.Errorf("natsjs: publish to %q: %w", topic, err)
}
