package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/heraldhq/herald/broker"
)

// slotNames are the hash-slot header values, so stamping one allocates
// nothing.
var slotNames = func() (s [maxPartitions]string) {
	for i := range s {
		s[i] = strconv.Itoa(i)
	}
	return s
}()

// pubCall is one Publish call waiting for its confirms.
type pubCall struct {
	errs      []error
	left      int
	done      chan struct{}
	abandoned bool
}

// slot is one published message waiting for its confirm.
type slot struct {
	call     *pubCall
	i        int
	returned bool
}

// pubChan is a confirm-mode channel used by Publish. Its AMQP channel is
// replaced when it dies. Publishes on it are serialised by mu; the
// confirms are matched in a dispatcher goroutine per AMQP channel.
type pubChan struct {
	b  *Broker
	mu sync.Mutex // serialises publishing and (re)opening
	ch *amqp.Channel
	hd amqp.Table // reused header table: amqp091 encodes it before Publish returns
	rr uint32     // round-robin hash slot for messages without a key

	pendMu  sync.Mutex
	cur     *inflight // the channel's pending confirms; replaced with ch
	stopped bool
}

// inflight is the FIFO of unconfirmed messages of one AMQP channel:
// pending[i] has publish tag base+i. Confirms arrive in tag order.
type inflight struct {
	base    uint64
	next    uint64
	pending []slot
	head    int
	dead    error // set when the channel closed: new publishes fail
}

// open makes sure pc has a live channel in confirm mode. Called with mu.
func (pc *pubChan) open(ctx context.Context) error {
	if pc.ch != nil && !pc.ch.IsClosed() {
		return nil
	}
	pc.ch = nil
	ch, err := pc.b.pub.channel(ctx)
	if err != nil {
		return err
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return fmt.Errorf("%w: rabbitmq: enable publisher confirms: %w", broker.ErrUnavailable, err)
	}
	// Unbuffered on purpose: amqp091 hands a basic.return to us before it
	// processes the basic.ack that follows it, and one goroutine reads
	// both, so a return is always recorded before its confirm.
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation))
	returns := ch.NotifyReturn(make(chan amqp.Return))
	fl := &inflight{base: 1, next: 1}
	pc.pendMu.Lock()
	if pc.stopped {
		pc.pendMu.Unlock()
		_ = ch.Close()
		return broker.ErrClosed
	}
	pc.cur = fl
	pc.pendMu.Unlock()
	pc.ch = ch
	if pc.hd == nil {
		pc.hd = make(amqp.Table, 8)
	}
	pc.b.wg.Go(func() { pc.dispatch(fl, confirms, returns) })
	return nil
}

// dispatch settles fl's pending messages as confirms and returns arrive,
// and fails the rest when the channel closes.
func (pc *pubChan) dispatch(fl *inflight, confirms <-chan amqp.Confirmation, returns <-chan amqp.Return) {
	for confirms != nil || returns != nil {
		select {
		case c, ok := <-confirms:
			if !ok {
				confirms = nil
				pc.pendMu.Lock()
				fl.dead = fmt.Errorf("%w: rabbitmq: channel closed before the broker confirmed the message", broker.ErrUnavailable)
				for fl.head < len(fl.pending) {
					pc.settle(fl, fl.dead)
				}
				pc.pendMu.Unlock()
				pc.b.known.Clear() // the failure may have been a deleted exchange
				continue
			}
			pc.pendMu.Lock()
			if c.DeliveryTag == fl.base+uint64(fl.head) && fl.head < len(fl.pending) {
				var err error
				switch {
				case !c.Ack:
					err = fmt.Errorf("%w: rabbitmq: broker nacked the message", broker.ErrUnavailable)
				case fl.pending[fl.head].returned:
					err = fmt.Errorf("%w: no queue is bound to its route", ErrUnroutable)
				}
				pc.settle(fl, err)
			}
			pc.pendMu.Unlock()
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			tag, _ := r.Headers[hTag].(int64)
			pc.pendMu.Lock()
			if tag > 0 && uint64(tag) >= fl.base+uint64(fl.head) {
				if i := int(uint64(tag) - fl.base); i < len(fl.pending) {
					fl.pending[i].returned = true
				}
			}
			pc.pendMu.Unlock()
		}
	}
}

// settle completes the head of fl with err. Called with pendMu.
func (pc *pubChan) settle(fl *inflight, err error) {
	s := fl.pending[fl.head]
	fl.pending[fl.head] = slot{}
	fl.head++
	if fl.head == len(fl.pending) {
		fl.base += uint64(fl.head)
		fl.pending = fl.pending[:0]
		fl.head = 0
	} else if fl.head >= 4096 && fl.head*2 >= len(fl.pending) {
		n := copy(fl.pending, fl.pending[fl.head:])
		fl.pending = fl.pending[:n]
		fl.base += uint64(fl.head)
		fl.head = 0
	}
	c := s.call
	if c.abandoned {
		return
	}
	if err == nil {
		err = errOK
	}
	c.errs[s.i] = err
	c.left--
	if c.left == 0 {
		close(c.done)
	}
}

// shutdown fails new publishes and closes the channel; the dispatcher then
// fails what is pending.
func (pc *pubChan) shutdown() {
	pc.pendMu.Lock()
	pc.stopped = true
	pc.pendMu.Unlock()
	pc.mu.Lock()
	if pc.ch != nil {
		_ = pc.ch.Close()
	}
	pc.mu.Unlock()
}

// Publish sends msgs with mandatory publishing on a confirm-mode channel,
// pipelined, and returns once RabbitMQ confirmed each one (for quorum
// queues and streams: written to a majority of replicas). A message that
// was nacked, returned as unroutable (ErrUnroutable), invalid, or whose
// channel closed before its confirm gets its entry in the
// *broker.PublishError; it may still have been stored (resending it can
// duplicate it). While the connection is down, Publish waits for it until
// ctx is done.
func (b *Broker) Publish(ctx context.Context, msgs ...*broker.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.isClosed() {
		return broker.ErrClosed
	}
	if len(msgs) == 0 {
		return nil
	}
	call := &pubCall{errs: make([]error, len(msgs)), done: make(chan struct{})}
	var last string
	for i, m := range msgs {
		if err := validate(m); err != nil {
			call.errs[i] = err
			continue
		}
		if m.Topic != last {
			if err := b.ensureTopic(ctx, m.Topic); err != nil {
				call.errs[i] = err
				continue
			}
			last = m.Topic
		}
		call.left++
	}
	if call.left == 0 {
		return broker.NewPublishError(call.errs)
	}
	pc := b.pubs[int(b.rr.Add(1)%uint64(len(b.pubs)))]
	err := pc.publish(ctx, call, len(msgs), pc.builder(msgs))
	return broker.NewPublishError(pc.wait(ctx, call, err))
}

// errOK marks a confirmed message until Publish returns, so that a nil
// entry always means "not settled yet".
var errOK = errors.New("rabbitmq: confirmed")

func validate(m *broker.Message) error {
	if m == nil {
		return fmt.Errorf("%w: nil message", broker.ErrInvalidMessage)
	}
	if err := broker.ValidateName("topic", m.Topic); err != nil {
		return err
	}
	if err := broker.ValidateRoute(m.Route); err != nil {
		return err
	}
	for k := range m.Header {
		if err := checkHeaderName(k); err != nil {
			return err
		}
	}
	if len(m.ID) > 255 || len(m.Key) > 65535 {
		return fmt.Errorf("%w: message id longer than 255 bytes or key longer than 65535", broker.ErrInvalidMessage)
	}
	return nil
}

// publish sends the messages of call whose entry is still nil; build
// fills the reused header table hd and returns where and what to publish.
func (pc *pubChan) publish(ctx context.Context, call *pubCall, n int, build func(i int, hd amqp.Table) (exchange, key string, p amqp.Publishing)) error {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if err := pc.open(ctx); err != nil {
		return err
	}
	// The call's messages leave in one write (see corkConn).
	cc := pc.b.pub.corker()
	cc.cork()
	defer cc.uncork()
	for i := range n {
		if call.errs[i] != nil {
			continue
		}
		pc.pendMu.Lock()
		fl := pc.cur
		if fl.dead != nil {
			call.errs[i] = fl.dead
			call.left--
			pc.pendMu.Unlock()
			continue
		}
		tag := fl.next
		fl.next++
		fl.pending = append(fl.pending, slot{call: call, i: i})
		pc.pendMu.Unlock()

		clear(pc.hd)
		ex, key, p := build(i, pc.hd)
		pc.hd[hTag] = int64(tag)
		p.Headers = pc.hd
		p.DeliveryMode = amqp.Persistent
		if err := pc.ch.Publish(ex, key, true, false, p); err != nil {
			pc.pendMu.Lock()
			if pc.cur == fl && fl.next == tag+1 && len(fl.pending) > fl.head && fl.dead == nil {
				fl.pending = fl.pending[:len(fl.pending)-1]
				fl.next--
				call.errs[i] = fmt.Errorf("%w: rabbitmq: publish: %w", broker.ErrUnavailable, err)
				call.left--
			}
			// Otherwise the dispatcher failed it with the channel.
			pc.pendMu.Unlock()
		}
	}
	pc.pendMu.Lock()
	if call.left == 0 {
		select {
		case <-call.done:
		default:
			close(call.done)
		}
	}
	pc.pendMu.Unlock()
	return nil
}

// build returns the builder of broker messages for publish.
func (pc *pubChan) builder(msgs []*broker.Message) func(i int, hd amqp.Table) (string, string, amqp.Publishing) {
	now := time.Now().UnixMilli()
	return func(i int, hd amqp.Table) (string, string, amqp.Publishing) {
		m := msgs[i]
		ct := ""
		for k, v := range m.Header {
			if k == hCT {
				ct = v
				continue
			}
			hd[k] = v
		}
		if m.Key != "" {
			hd[hKey] = m.Key
			hd[hSlot] = slotNames[broker.Partition(m.Key, maxPartitions)]
		} else {
			pc.rr++
			hd[hSlot] = slotNames[pc.rr%maxPartitions]
		}
		hd[hTime] = now
		return exchangeName(m.Topic), m.Route, amqp.Publishing{ContentType: ct, MessageId: m.ID, Body: m.Data}
	}
}

// rawMsg is a message the adapter itself publishes: a delayed copy, a
// replayed copy, a replay marker.
type rawMsg struct {
	exchange, key string
	p             amqp.Publishing
}

// sendRaw publishes msgs with confirms and returns an error per message
// (nil: confirmed).
func (b *Broker) sendRaw(ctx context.Context, msgs []rawMsg) []error {
	call := &pubCall{errs: make([]error, len(msgs)), left: len(msgs), done: make(chan struct{})}
	if b.isClosed() {
		for i := range call.errs {
			call.errs[i] = broker.ErrClosed
		}
		return call.errs
	}
	pc := b.pubs[int(b.rr.Add(1)%uint64(len(b.pubs)))]
	err := pc.publish(ctx, call, len(msgs), func(i int, hd amqp.Table) (string, string, amqp.Publishing) {
		for k, v := range msgs[i].p.Headers {
			hd[k] = v
		}
		return msgs[i].exchange, msgs[i].key, msgs[i].p
	})
	return pc.wait(ctx, call, err)
}

// wait waits for call's confirms and returns its per-message errors.
func (pc *pubChan) wait(ctx context.Context, call *pubCall, err error) []error {
	if err != nil {
		for i := range call.errs {
			if call.errs[i] == nil {
				call.errs[i] = err
			}
		}
		return call.errs
	}
	select {
	case <-call.done:
	case <-ctx.Done():
	}
	pc.pendMu.Lock()
	defer pc.pendMu.Unlock()
	// Entries still nil were not confirmed in time; errOK ones were.
	call.abandoned = true
	for i, err := range call.errs {
		switch err {
		case nil:
			call.errs[i] = fmt.Errorf("%w: rabbitmq: waiting for confirm: %w", broker.ErrUnavailable, ctx.Err())
		case errOK:
			call.errs[i] = nil
		}
	}
	return call.errs
}
