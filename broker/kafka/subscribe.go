package kafka

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/heraldhq/herald/broker"
)

// Subscribe joins group opts.Group on topic. The Herald group is the Kafka
// consumer group GroupID(topic, group), consuming topic and the group's
// retry topic RetryTopic(topic, group); both are created on first use.
//
// A group that has no committed offset on topic is new: Subscribe commits
// its start position (opts.Start, resolved now) before joining, so a
// message published after Subscribe returns is never missed by a StartNew
// group, however long the join takes. An existing group keeps its offsets.
func (b *Broker) Subscribe(ctx context.Context, topic string, opts broker.SubscribeOptions) (broker.Subscription, error) {
	if b.closed.Load() {
		return nil, broker.ErrClosed
	}
	if err := broker.ValidateName("topic", topic); err != nil {
		return nil, err
	}
	opts, err := opts.WithDefaults()
	if err != nil {
		return nil, err
	}
	retry := RetryTopic(topic, opts.Group)
	if len(retry) > maxTopicLen {
		return nil, fmt.Errorf("%w: retry topic %q is longer than Kafka's %d characters: shorten the topic or group name", broker.ErrInvalidTopic, retry, maxTopicLen)
	}
	var routes map[string]struct{}
	if len(opts.Routes) > 0 {
		routes = make(map[string]struct{}, len(opts.Routes))
		for _, r := range opts.Routes {
			if err := broker.ValidateRoute(r); err != nil {
				return nil, fmt.Errorf("kafka: subscribe %q: %w", topic, err)
			}
			routes[r] = struct{}{}
		}
	}
	info, err := b.ensureTopic(ctx, topic, nil)
	if err != nil {
		return nil, err
	}
	rcfg := b.cfg.topicDefaults
	rcfg.Partitions = int(info.partitions)
	if _, err := b.ensureTopic(ctx, retry, &rcfg); err != nil {
		return nil, err
	}
	groupID := GroupID(topic, opts.Group)
	if err := b.pinStart(ctx, groupID, topic, retry, opts.Start); err != nil {
		return nil, err
	}

	s := &subscription{
		b:          b,
		topic:      topic,
		retryTopic: retry,
		group:      opts.Group,
		groupID:    groupID,
		opts:       opts,
		routes:     routes,
		parts:      make(map[tp]*part),
		space:      make(chan struct{}, 1),
		kick:       make(chan struct{}, 1),
		bufCap:     max(opts.MaxInFlight, 4096),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	// A fetch long-polls for FetchMaxWait; a partition assigned meanwhile
	// waits for the next fetch, so keep it short (Kafka's default).
	copts := append(b.cfg.baseOpts(), kgo.FetchMaxWait(500*time.Millisecond))
	copts = append(copts, b.cfg.consumerOpts...)
	copts = append(copts,
		kgo.ConsumerGroup(groupID),
		kgo.ConsumeTopics(topic, retry),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(s.onAssigned),
		kgo.OnPartitionsRevoked(s.onRevoked),
		kgo.OnPartitionsLost(s.onLost),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RecordPartitioner(keyPartitioner{}),
	)
	cl, err := kgo.NewClient(copts...)
	if err != nil {
		s.cancel()
		return nil, fmt.Errorf("kafka: subscribe %q group %q: %w", topic, opts.Group, err)
	}
	s.cl = cl
	b.clock.acquire()
	s.wg.Add(2)
	go s.pump()
	go s.committer()
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		_ = s.Close()
		return nil, broker.ErrClosed
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s, nil
}

func (b *Broker) removeSub(s *subscription) {
	b.mu.Lock()
	delete(b.subs, s)
	b.mu.Unlock()
}

// pinStart commits the start position of a group that has no committed
// offset on topic yet.
func (b *Broker) pinStart(ctx context.Context, groupID, topic, retry string, start broker.Start) error {
	if have, err := b.hasCommits(ctx, groupID, topic); err != nil || have {
		return err
	}
	offs, err := b.startOffsets(ctx, topic, start)
	if err != nil {
		return fmt.Errorf("kafka: group %q: start %s: %w", groupID, start, err)
	}
	ends, err := b.adm.ListEndOffsets(ctx, retry)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("kafka: group %q: retry topic %q end offsets: %w: %w", groupID, retry, broker.ErrUnavailable, err)
	}
	ends.Offsets().Each(func(o kadm.Offset) { offs.Add(o) })
	// No leader epoch: with one, the client validates the offset before
	// fetching, and a partition validated late waits out the first
	// fetch's long poll.
	offs.Each(func(o kadm.Offset) {
		o.LeaderEpoch = -1
		offs.Add(o)
	})
	resps, err := b.adm.CommitOffsets(ctx, groupID, offs)
	if err == nil {
		err = resps.Error()
	}
	if err != nil {
		// Another member may have created the group meanwhile: its
		// commit wins and ours is refused because the group has members.
		if have, err2 := b.hasCommits(ctx, groupID, topic); err2 == nil && have {
			return nil
		}
		return fmt.Errorf("kafka: group %q: commit start %s: %w: %w", groupID, start, broker.ErrUnavailable, err)
	}
	return nil
}

func (b *Broker) hasCommits(ctx context.Context, groupID, topic string) (bool, error) {
	resps, err := b.adm.FetchOffsetsForTopics(ctx, groupID, topic)
	if err != nil {
		if errors.Is(err, kerr.GroupIDNotFound) {
			return false, nil
		}
		return false, fmt.Errorf("kafka: group %q: fetch offsets: %w: %w", groupID, broker.ErrUnavailable, err)
	}
	have := false
	for _, ps := range resps {
		for _, r := range ps {
			if r.Err == nil && r.At >= 0 {
				have = true
			}
		}
	}
	return have, nil
}

const offsetMask = 1<<48 - 1

// startOffsets resolves a start position to one offset per partition.
func (b *Broker) startOffsets(ctx context.Context, topic string, start broker.Start) (kadm.Offsets, error) {
	var (
		lo  kadm.ListedOffsets
		err error
	)
	switch start.Kind {
	case broker.StartFirst:
		lo, err = b.adm.ListStartOffsets(ctx, topic)
	case broker.StartTime:
		lo, err = b.adm.ListOffsetsAfterMilli(ctx, start.Time.UnixMilli(), topic)
	case broker.StartSequence:
		return b.sequenceOffsets(ctx, topic, start.Seq)
	default:
		lo, err = b.adm.ListEndOffsets(ctx, topic)
	}
	if err == nil {
		err = lo.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", broker.ErrUnavailable, err)
	}
	return lo.Offsets(), nil
}

// sequenceOffsets starts partition seq>>48 at offset (seq&mask)-1 and, on a
// topic with several partitions, every other partition at the first record
// stored at or after the timestamp of that record.
func (b *Broker) sequenceOffsets(ctx context.Context, topic string, seq uint64) (kadm.Offsets, error) {
	p, off := int32(seq>>48), int64(seq&offsetMask)-1
	info, err := b.ensureTopic(ctx, topic, nil)
	if err != nil {
		return nil, err
	}
	if off < 0 || p >= info.partitions {
		return nil, fmt.Errorf("sequence %d is not a position in topic %q (%d partitions)", seq, topic, info.partitions)
	}
	offs := make(kadm.Offsets)
	offs.Add(kadm.Offset{Topic: topic, Partition: p, At: off, LeaderEpoch: -1})
	if info.partitions == 1 {
		return offs, nil
	}
	ts, err := b.recordTime(ctx, topic, p, off)
	if err != nil {
		return nil, err
	}
	var lo kadm.ListedOffsets
	if ts < 0 {
		lo, err = b.adm.ListEndOffsets(ctx, topic)
	} else {
		lo, err = b.adm.ListOffsetsAfterMilli(ctx, ts, topic)
	}
	if err == nil {
		err = lo.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", broker.ErrUnavailable, err)
	}
	lo.Offsets().Each(func(o kadm.Offset) {
		if o.Partition != p {
			offs.Add(o)
		}
	})
	return offs, nil
}

// recordTime reads the timestamp (Unix ms) of the record at or after off,
// or -1 if the partition has none there yet.
func (b *Broker) recordTime(ctx context.Context, topic string, p int32, off int64) (int64, error) {
	ends, err := b.adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("%w: %w", broker.ErrUnavailable, err)
	}
	if end, ok := ends.Lookup(topic, p); !ok || end.Offset <= off {
		return -1, nil
	}
	cl, err := kgo.NewClient(append(b.cfg.baseOpts(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {p: kgo.NewOffset().At(off)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	// Records from off on may all be aborted transactional ones: bound
	// the search and fall back to the end.
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		fs := cl.PollRecords(pctx, 1)
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if pctx.Err() != nil {
			return -1, nil
		}
		for _, r := range fs.Records() {
			if r.Offset >= off {
				return r.Timestamp.UnixMilli(), nil
			}
		}
	}
}

type tp struct {
	topic     string
	partition int32
}

type entryState uint8

const (
	stQueued   entryState = iota // waiting in ready, redo or delayed
	stInflight                   // handed out, on the inflight list
	stBusy                       // being nacked or committed in a transaction
	stSettled                    // acked, terminated or moved to the retry topic
	stDropped                    // its partition was given up; a late settle is ignored
)

// entry is one fetched record of an assigned partition until it is settled.
type entry struct {
	p        *part
	rec      *kgo.Record
	attempt  int // deliveries so far
	state    entryState
	token    uint32
	deadline time.Time // when an inflight delivery is redelivered
	due      int64     // Unix ms, for a delayed retry record
	heapIdx  int
	prev     *entry // inflight list, ordered by deadline
	next     *entry
	seq      uint64
	ts       time.Time
	txn      bool // settled by the transaction being committed
	// first is the first delivery, decoded by the pump so Next only
	// hands it out; later deliveries are allocated and decoded anew.
	first    delivery
	hasFirst bool
}

// part tracks one assigned partition: every record fetched and not yet
// below the commit point, in offset order.
type part struct {
	topic     string
	partition int32
	retry     bool
	entries   []*entry
	head      int
	next      int64 // one past the last offset fetched; -1 before the first
	committed int64 // last committed offset; -1 if unknown
	commMeta  string
	prior     *prior
	unsettled int // handed out and not settled (inflight or busy)
	revoking  bool
	gone      bool
	waiters   []ackWaiter
	// snaps counts the snapshots of this partition's commit state taken
	// so far; a commit answers only the confirmed acks made before its
	// snapshot.
	snaps uint64
}

type ackWaiter struct {
	off int64
	ch  chan error
	// after is p.snaps when the ack settled: commits from snapshots up
	// to it did not see the ack.
	after uint64
}

// snapshot takes the commit point and metadata of p as they are now.
func (p *part) snapshot(assumeTxn bool) partCommit {
	off := p.point(assumeTxn)
	meta, cover := p.meta(off, assumeTxn)
	p.snaps++
	return partCommit{p: p, off: off, meta: meta, cover: cover, snap: p.snaps}
}

// popSettled drops settled entries from the front.
func (p *part) popSettled() {
	for p.head < len(p.entries) && p.entries[p.head].state == stSettled {
		p.entries[p.head] = nil
		p.head++
	}
	if p.head == len(p.entries) {
		p.entries, p.head = p.entries[:0], 0
	} else if p.head > 1024 && p.head*2 > len(p.entries) {
		n := copy(p.entries, p.entries[p.head:])
		clear(p.entries[n:])
		p.entries, p.head = p.entries[:n], 0
	}
}

func (e *entry) done(assumeTxn bool) bool {
	return e.state == stSettled || (assumeTxn && e.txn)
}

// point is the offset to commit: the first unsettled record, or one past
// the last fetched; -1 if nothing was fetched.
func (p *part) point(assumeTxn bool) int64 {
	for _, e := range p.entries[p.head:] {
		if !e.done(assumeTxn) {
			return e.rec.Offset
		}
	}
	return p.next
}

// meta encodes what is known past off (see meta.go), including what a
// previous owner recorded about records not fetched yet.
func (p *part) meta(off int64, assumeTxn bool) (string, int64) {
	w := newMetaWriter(off)
	for _, e := range p.entries[p.head:] {
		o := e.rec.Offset
		if o < off {
			continue
		}
		switch {
		case e.done(assumeTxn):
			w.settled(o)
		case e.attempt > 0:
			w.attempt(o, e.attempt)
		default:
			w.gap()
		}
	}
	if pr := p.prior; pr != nil && p.next < pr.end {
		from := max(p.next, off)
		var atts []int64
		for o := range pr.attempts {
			if o >= from {
				atts = append(atts, o)
			}
		}
		sort.Slice(atts, func(i, j int) bool { return atts[i] < atts[j] })
		si := 0
		for o := from; o < pr.end; {
			// next settled offset from the spans, next attempt offset
			for si < len(pr.settled) && pr.settled[si].to < o {
				si++
			}
			ns := pr.end
			if si < len(pr.settled) {
				ns = max(pr.settled[si].from, o)
			}
			na := pr.end
			if len(atts) > 0 {
				na = atts[0]
			}
			switch {
			case ns < na:
				w.settled(ns)
				o = ns + 1
			case na < pr.end:
				w.attempt(na, pr.attempts[na])
				atts = atts[1:]
				o = na + 1
			default:
				o = pr.end
			}
		}
	}
	return w.finish()
}

// subscription is one member of a group. Records flow pump -> ready (or
// delayed -> redo) -> Next -> inflight -> settled; the committer commits
// each partition's point with its metadata.
type subscription struct {
	b          *Broker
	topic      string
	retryTopic string
	group      string
	groupID    string
	opts       broker.SubscribeOptions
	routes     map[string]struct{}
	cl         *kgo.Client
	bufCap     int

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	commitMu sync.Mutex // orders commits: snapshot and request are one step

	mu          sync.Mutex
	parts       map[tp]*part
	ready       fifo
	redo        fifo
	delayed     delayHeap
	head, tail  *entry // inflight list
	inflight    int
	changed     chan struct{} // closed on change; nil when nobody waits
	closed      bool
	retryPaused bool
	pumpWaiting bool

	space     chan struct{} // the pump may fetch more
	kick      chan struct{} // commit now
	closing   atomic.Bool
	crashed   atomic.Bool // tests: stop committing, as a killed process would
	closeOnce sync.Once
}

// Close stops receiving and leaves the group after committing what was
// settled. Deliveries handed out and not settled are redelivered to the
// group (with their attempt count, kept in the commit metadata); a late
// Ack of one is ignored.
func (s *subscription) Close() error {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		s.mu.Lock()
		s.closed = true
		s.notifyLocked()
		s.mu.Unlock()
		s.cancel()
		s.wg.Wait()
		s.cl.Close() // leaves the group; onRevoked commits
		s.b.removeSub(s)
		s.b.clock.release()
	})
	return nil
}

func (s *subscription) notifyLocked() {
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
}

func (s *subscription) waitChLocked() chan struct{} {
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return s.changed
}

func (s *subscription) kickCommit() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Next hands out deliveries: redeliveries first (ack wait expired, nacked,
// retry records that came due), then fetched records in the order they
// were fetched, which keeps each partition in offset order.
func (s *subscription) Next(ctx context.Context) (broker.Delivery, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, broker.ErrClosed
		}
		now := s.b.clock.Now()
		s.expireLocked(now)
		s.promoteLocked(now)
		if s.inflight < s.opts.MaxInFlight {
			if e := s.popLocked(); e != nil {
				d, decoded := s.deliverLocked(e, now)
				wake := s.pumpWaiting && s.roomLocked() >= s.bufCap/4
				if wake {
					s.pumpWaiting = false
				}
				s.mu.Unlock()
				if wake {
					select {
					case s.space <- struct{}{}:
					default:
					}
				}
				if !decoded {
					d.msg = decodeMessage(e.rec, s.topic)
				}
				if d.msg.Route == "" {
					s.b.cfg.adopt(&d.msg, e.seq, e.ts)
				}
				return d, nil
			}
		}
		var wake time.Time
		if s.head != nil {
			wake = s.head.deadline
		}
		if len(s.delayed) > 0 && s.inflight < s.opts.MaxInFlight {
			if due := time.UnixMilli(s.delayed[0].due); wake.IsZero() || due.Before(wake) {
				wake = due
			}
		}
		ch := s.waitChLocked()
		s.mu.Unlock()
		var tc <-chan time.Time
		if !wake.IsZero() {
			// now is the coarse clock: wake no earlier than its next tick.
			wait := max(wake.Sub(now), clockTick)
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			tc = timer.C
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ch:
		case <-tc:
		}
	}
}

func (s *subscription) popLocked() *entry {
	for {
		e := s.redo.pop()
		if e == nil {
			e = s.ready.pop()
		}
		if e == nil {
			return nil
		}
		if e.state == stQueued && !e.p.revoking && !e.p.gone {
			return e
		}
	}
}

// deliverLocked hands e out; decoded reports whether the delivery's
// message is already filled in.
func (s *subscription) deliverLocked(e *entry, now time.Time) (d *delivery, decoded bool) {
	e.attempt++
	e.token++
	e.state = stInflight
	e.deadline = now.Add(s.opts.AckWait + clockTick)
	s.pushInflight(e)
	e.p.unsettled++
	if e.hasFirst {
		e.hasFirst = false
		d = &e.first
		d.token, d.attempt = e.token, e.attempt
		return d, true
	}
	return &delivery{s: s, e: e, token: e.token, attempt: e.attempt}, false
}

// expireLocked moves deliveries whose ack wait passed to the redo queue.
func (s *subscription) expireLocked(now time.Time) {
	for e := s.head; e != nil && !now.Before(e.deadline); e = s.head {
		s.removeInflight(e)
		e.p.unsettled--
		if e.p.revoking || e.p.gone {
			e.state = stDropped
			continue
		}
		e.state = stQueued
		s.redo.push(e)
	}
}

// promoteLocked moves retry records that came due to the redo queue.
func (s *subscription) promoteLocked(now time.Time) {
	ms := now.UnixMilli()
	for len(s.delayed) > 0 && s.delayed[0].due <= ms {
		e := heap.Pop(&s.delayed).(*entry)
		s.redo.push(e)
	}
}

func (s *subscription) pushInflight(e *entry) {
	e.next = nil
	e.prev = s.tail
	if s.tail != nil {
		s.tail.next = e
	} else {
		s.head = e
	}
	s.tail = e
	s.inflight++
}

// insertInflight puts e back in deadline order (a failed nack).
func (s *subscription) insertInflight(e *entry) {
	at := s.tail
	for at != nil && at.deadline.After(e.deadline) {
		at = at.prev
	}
	if at == nil {
		e.prev, e.next = nil, s.head
		if s.head != nil {
			s.head.prev = e
		} else {
			s.tail = e
		}
		s.head = e
	} else {
		e.prev, e.next = at, at.next
		if at.next != nil {
			at.next.prev = e
		} else {
			s.tail = e
		}
		at.next = e
	}
	s.inflight++
}

func (s *subscription) removeInflight(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		s.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		s.tail = e.prev
	}
	e.prev, e.next = nil, nil
	s.inflight--
}

type settleKind uint8

const (
	settleAck settleKind = iota
	settleNackNow
	settleProgress
)

// settle applies k to d if d is still the current delivery of its record.
// For a confirmed ack it returns a channel that receives the outcome of
// the commit that records it.
func (s *subscription) settle(d *delivery, k settleKind) (chan error, error) {
	if s.b.closed.Load() {
		return nil, broker.ErrClosed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := d.e
	if e.token != d.token || e.state != stInflight {
		if e.token == d.token && e.state == stDropped && k == settleAck && s.opts.ConfirmAcks {
			return nil, ErrPartitionRevoked
		}
		return nil, nil // already settled or redelivered: a late settle is ignored
	}
	p := e.p
	switch k {
	case settleProgress:
		s.removeInflight(e)
		e.deadline = s.b.clock.Now().Add(s.opts.AckWait + clockTick)
		s.pushInflight(e)
		return nil, nil
	case settleNackNow:
		s.removeInflight(e)
		p.unsettled--
		e.state = stQueued
		s.redo.push(e)
	case settleAck:
		s.removeInflight(e)
		p.unsettled--
		e.state = stSettled
		p.popSettled()
	}
	s.notifyLocked()
	if k == settleAck && s.opts.ConfirmAcks {
		ch := make(chan error, 1)
		p.waiters = append(p.waiters, ackWaiter{off: e.rec.Offset, ch: ch, after: p.snaps})
		return ch, nil
	}
	return nil, nil
}

// nackLater moves d's record to the retry topic, due after delay. The
// record is settled here only once the retry record is acknowledged.
func (s *subscription) nackLater(ctx context.Context, d *delivery, delay time.Duration) error {
	if s.b.closed.Load() {
		return broker.ErrClosed
	}
	s.mu.Lock()
	e := d.e
	if e.token != d.token || e.state != stInflight {
		s.mu.Unlock()
		return nil
	}
	s.removeInflight(e)
	s.inflight++ // still counts against MaxInFlight while busy
	e.state = stBusy
	attempt, seq, ts := e.attempt, e.seq, e.ts
	s.mu.Unlock()

	r := retryRecord(s.retryTopic, e.rec, attempt+1, time.Now().Add(delay), seq, ts)
	err := s.b.cl.ProduceSync(ctx, r).FirstErr()

	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight--
	p := e.p
	switch {
	case p.gone:
		e.state = stDropped
	case err != nil:
		e.state = stInflight
		s.insertInflight(e)
		return fmt.Errorf("kafka: nack: publish to retry topic %q: %w", s.retryTopic, err)
	default:
		e.state = stSettled
		p.unsettled--
		p.popSettled()
	}
	s.notifyLocked()
	return nil
}

func retryRecord(topic string, src *kgo.Record, attempt int, due time.Time, seq uint64, ts time.Time) *kgo.Record {
	hdrs := make([]kgo.RecordHeader, 0, len(src.Headers)+4)
	for _, h := range src.Headers {
		switch h.Key {
		case HeaderAttempt, HeaderDue, HeaderSeq, HeaderTime:
		default:
			hdrs = append(hdrs, h)
		}
	}
	hdrs = append(hdrs,
		kgo.RecordHeader{Key: HeaderAttempt, Value: strconv.AppendInt(nil, int64(attempt), 10)},
		kgo.RecordHeader{Key: HeaderDue, Value: strconv.AppendInt(nil, due.UnixMilli(), 10)},
		kgo.RecordHeader{Key: HeaderSeq, Value: strconv.AppendUint(nil, seq, 10)},
		kgo.RecordHeader{Key: HeaderTime, Value: strconv.AppendInt(nil, ts.UnixMilli(), 10)},
	)
	return &kgo.Record{Topic: topic, Key: src.Key, Value: src.Value, Headers: hdrs}
}

// pump fetches records while the buffer has room.
func (s *subscription) pump() {
	defer s.wg.Done()
	for {
		if !s.waitRoom() {
			s.cl.AllowRebalance()
			return
		}
		// Take every buffered fetch at once: franz-go issues the next fetch
		// only when the buffered one is drained, so a partial take stalls
		// the pipeline. The buffer may overshoot by one fetch.
		fs := s.cl.PollFetches(s.ctx)
		if fs.IsClientClosed() || s.ctx.Err() != nil {
			s.cl.AllowRebalance()
			return
		}
		fs.EachError(func(t string, p int32, err error) {
			s.b.cfg.logger.Warn("kafka: fetch", "topic", t, "partition", p, "group", s.group, "err", err)
		})
		pause, resume := s.ingest(fs)
		s.cl.AllowRebalance()
		if pause {
			s.cl.PauseFetchTopics(s.retryTopic)
		}
		if resume {
			s.cl.ResumeFetchTopics(s.retryTopic)
		}
	}
}

func (s *subscription) roomLocked() int { return s.bufCap - s.ready.len() - s.redo.len() }

// waitRoom waits until a quarter of the buffer is free (false: closed).
func (s *subscription) waitRoom() bool {
	for {
		s.mu.Lock()
		closed := s.closed
		wait := s.roomLocked() < s.bufCap/4
		s.pumpWaiting = wait
		s.mu.Unlock()
		if closed {
			return false
		}
		if !wait {
			return true
		}
		select {
		case <-s.space:
		case <-s.ctx.Done():
			return false
		}
	}
}

func (s *subscription) ingest(fs kgo.Fetches) (pause, resume bool) {
	slab := make([]entry, fs.NumRecords())
	s.mu.Lock()
	defer s.mu.Unlock()
	nowMs := time.Now().UnixMilli()
	var (
		p    *part
		last tp
	)
	i := 0
	fs.EachRecord(func(r *kgo.Record) {
		if p == nil || r.Partition != last.partition || r.Topic != last.topic {
			last = tp{r.Topic, r.Partition}
			p = s.parts[last]
		}
		if p == nil || p.revoking || p.gone || (p.next >= 0 && r.Offset < p.next) {
			return
		}
		p.next = r.Offset + 1
		e := &slab[i]
		i++
		e.p, e.rec, e.heapIdx = p, r, -1
		p.entries = append(p.entries, e)
		settled := false
		if pr := p.prior; pr != nil {
			switch {
			case r.Offset >= pr.end:
				p.prior = nil
			case pr.isSettled(r.Offset):
				settled = true
			default:
				e.attempt = pr.attempts[r.Offset]
			}
		}
		if !settled && s.routes != nil {
			if _, ok := s.routes[s.routeOf(r)]; !ok {
				settled = true
			}
		}
		if settled {
			e.state = stSettled
			p.popSettled()
			return
		}
		e.first.s, e.first.e = s, e
		decodeInto(&e.first.msg, r, s.topic)
		e.hasFirst = true
		if !p.retry {
			e.seq = uint64(r.Partition)<<48 | uint64(r.Offset+1)
			e.ts = r.Timestamp
			s.ready.push(e)
			return
		}
		h := parseRetry(r)
		e.attempt = max(e.attempt, h.attempt-1)
		e.seq, e.ts = h.seq, h.ts
		if h.due > nowMs {
			e.due = h.due
			heap.Push(&s.delayed, e)
			return
		}
		s.redo.push(e)
	})
	if n := len(s.delayed); !s.retryPaused && n >= s.b.cfg.maxDelayed {
		s.retryPaused, pause = true, true
	} else if s.retryPaused && n < s.b.cfg.maxDelayed/2 {
		s.retryPaused, resume = false, true
	}
	s.notifyLocked()
	return pause, resume
}

// committer commits settled offsets every commit interval, and at once
// when a confirmed ack asks.
func (s *subscription) committer() {
	defer s.wg.Done()
	t := time.NewTicker(s.b.cfg.commitInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
		if !s.crashed.Load() {
			s.commit(s.ctx, s.cl, nil)
		}
	}
}

type partCommit struct {
	p     *part
	off   int64
	meta  string
	cover int64
	snap  uint64 // p.snaps when taken
}

// commit commits the point and metadata of the given partitions (nil: all
// not being revoked) that changed since their last commit.
func (s *subscription) commit(ctx context.Context, cl *kgo.Client, only []*part) {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.mu.Lock()
	var pcs []partCommit
	add := func(p *part) {
		if p.gone {
			return
		}
		pc := p.snapshot(false)
		if pc.off < 0 {
			return // nothing fetched yet
		}
		if pc.off == p.committed && pc.meta == p.commMeta {
			s.resolveLocked(pc)
			return
		}
		pcs = append(pcs, pc)
	}
	if only != nil {
		for _, p := range only {
			add(p)
		}
	} else {
		for _, p := range s.parts {
			if !p.revoking {
				add(p)
			}
		}
	}
	s.mu.Unlock()
	if len(pcs) == 0 {
		return
	}
	offsets := make(map[string]map[int32]kgo.EpochOffset, 2)
	metas := make(map[tp]string, len(pcs))
	for _, pc := range pcs {
		m := offsets[pc.p.topic]
		if m == nil {
			m = make(map[int32]kgo.EpochOffset)
			offsets[pc.p.topic] = m
		}
		m[pc.p.partition] = kgo.EpochOffset{Epoch: -1, Offset: pc.off}
		metas[tp{pc.p.topic, pc.p.partition}] = pc.meta
	}
	cctx := kgo.PreCommitFnContext(ctx, func(req *kmsg.OffsetCommitRequest) error {
		for i := range req.Topics {
			t := &req.Topics[i]
			for j := range t.Partitions {
				if m, ok := metas[tp{t.Topic, t.Partitions[j].Partition}]; ok {
					t.Partitions[j].Metadata = &m
				}
			}
		}
		return nil
	})
	var (
		resp *kmsg.OffsetCommitResponse
		cerr error
	)
	cl.CommitOffsetsSync(cctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, r *kmsg.OffsetCommitResponse, err error) {
		resp, cerr = r, err
	})
	failed := map[tp]error{}
	if cerr == nil && resp != nil {
		for _, t := range resp.Topics {
			name := t.Topic
			if name == "" {
				name = s.topicByID(t.TopicID)
			}
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					failed[tp{name, p.Partition}] = err
				}
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, pc := range pcs {
		err := cerr
		if err == nil {
			err = failed[tp{pc.p.topic, pc.p.partition}]
		}
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				s.b.cfg.logger.Warn("kafka: commit", "topic", pc.p.topic, "partition", pc.p.partition, "group", s.group, "offset", pc.off, "err", err)
			}
			continue
		}
		pc.p.committed, pc.p.commMeta = pc.off, pc.meta
		s.resolveLocked(pc)
	}
}

func (s *subscription) topicByID(id [16]byte) string {
	for _, name := range []string{s.topic, s.retryTopic} {
		if v, ok := s.b.topics.Load(name); ok && v.(*topicInfo).id == id {
			return name
		}
	}
	return ""
}

// resolveLocked answers the confirmed acks that the commit of pc has made
// durable: those settled before pc's snapshot whose record is below the
// committed offset or described as settled by its metadata (records below
// pc.cover). An ack settled while the commit was in flight waits for the
// next commit, whose snapshot includes it.
func (s *subscription) resolveLocked(pc partCommit) {
	p := pc.p
	keep := p.waiters[:0]
	for _, w := range p.waiters {
		if w.after < pc.snap && (w.off < pc.off || w.off < pc.cover) {
			w.ch <- nil
			continue
		}
		keep = append(keep, w)
	}
	clear(p.waiters[len(keep):])
	p.waiters = keep
}

func (s *subscription) partsOf(m map[string][]int32) []*part {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ps []*part
	for t, parts := range m {
		for _, n := range parts {
			if p := s.parts[tp{t, n}]; p != nil {
				ps = append(ps, p)
			}
		}
	}
	return ps
}

func (s *subscription) onAssigned(ctx context.Context, _ *kgo.Client, assigned map[string][]int32) {
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	offs, err := s.b.adm.FetchOffsetsForTopics(fctx, s.groupID, s.topic, s.retryTopic)
	cancel()
	if err != nil {
		s.b.cfg.logger.Warn("kafka: fetch committed metadata; attempts restart at 1", "group", s.group, "err", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for t, parts := range assigned {
		for _, n := range parts {
			p := &part{topic: t, partition: n, retry: t == s.retryTopic, next: -1, committed: -1}
			if o, ok := offs.Lookup(t, n); ok && o.Err == nil && o.At >= 0 {
				p.committed, p.commMeta = o.At, o.Metadata
				p.prior = decodeMeta(o.Metadata, o.At)
			}
			s.parts[tp{t, n}] = p
		}
	}
}

func (s *subscription) onRevoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	s.giveUp(ctx, cl, revoked, true)
}

func (s *subscription) onLost(ctx context.Context, cl *kgo.Client, lost map[string][]int32) {
	s.giveUp(ctx, cl, lost, false)
}

// giveUp hands partitions back to the group: it stops handing out their
// records, waits (bounded) for their deliveries to be settled, commits,
// and forgets them.
func (s *subscription) giveUp(ctx context.Context, cl *kgo.Client, m map[string][]int32, commit bool) {
	ps := s.partsOf(m)
	if len(ps) == 0 {
		return
	}
	s.mu.Lock()
	for _, p := range ps {
		p.revoking = true
	}
	keep := func(e *entry) bool { return !e.p.revoking }
	s.ready.filter(keep)
	s.redo.filter(keep)
	s.delayed.filter(keep)
	s.notifyLocked()
	s.mu.Unlock()

	if commit && !s.closing.Load() {
		s.drain(ps)
	}
	if commit && !s.crashed.Load() {
		cctx, cancel := waitCtx(ctx, 10*time.Second)
		s.commit(cctx, cl, ps)
		cancel()
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range ps {
		p.gone = true
		delete(s.parts, tp{p.topic, p.partition})
		for _, w := range p.waiters {
			w.ch <- ErrPartitionRevoked
		}
		p.waiters = nil
	}
	for e := s.head; e != nil; {
		next := e.next
		if e.p.gone {
			s.removeInflight(e)
			e.state = stDropped
		}
		e = next
	}
	s.notifyLocked()
}

// drain waits until the partitions have no unsettled delivery, for at most
// the rebalance drain and the ack wait.
func (s *subscription) drain(ps []*part) {
	t := time.NewTimer(min(s.b.cfg.drain, s.opts.AckWait))
	defer t.Stop()
	for {
		s.mu.Lock()
		n := 0
		for _, p := range ps {
			n += p.unsettled
		}
		var ch chan struct{}
		if n > 0 {
			ch = s.waitChLocked()
		}
		s.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-ch:
		case <-t.C:
			return
		case <-s.ctx.Done():
			return
		}
	}
}

// fifo is a queue of entries.
type fifo struct {
	q []*entry
	h int
}

func (f *fifo) len() int { return len(f.q) - f.h }

func (f *fifo) push(e *entry) {
	if f.h > 1024 && f.h*2 > len(f.q) {
		n := copy(f.q, f.q[f.h:])
		clear(f.q[n:])
		f.q, f.h = f.q[:n], 0
	}
	f.q = append(f.q, e)
}

func (f *fifo) pop() *entry {
	if f.h == len(f.q) {
		return nil
	}
	e := f.q[f.h]
	f.q[f.h] = nil
	f.h++
	if f.h == len(f.q) {
		f.q, f.h = f.q[:0], 0
	}
	return e
}

func (f *fifo) filter(keep func(*entry) bool) {
	n := 0
	for _, e := range f.q[f.h:] {
		if keep(e) {
			f.q[n] = e
			n++
		}
	}
	clear(f.q[n:])
	f.q, f.h = f.q[:n], 0
}

// delayHeap orders delayed retry records by due time.
type delayHeap []*entry

func (h delayHeap) Len() int           { return len(h) }
func (h delayHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h delayHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = i, j
}
func (h *delayHeap) Push(x any) {
	e := x.(*entry)
	e.heapIdx = len(*h)
	*h = append(*h, e)
}
func (h *delayHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.heapIdx = -1
	return e
}

func (h *delayHeap) filter(keep func(*entry) bool) {
	n := 0
	for _, e := range *h {
		if keep(e) {
			(*h)[n] = e
			n++
		}
	}
	clear((*h)[n:])
	*h = (*h)[:n]
	for i, e := range *h {
		e.heapIdx = i
	}
	heap.Init(h)
}
