package natsjs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
)

// Key-ordered groups. A topic has P partitions; a key-ordered group has one
// durable consumer per partition ("<group>_p<N>"), each with the pinned
// priority policy, so the server delivers a partition to one client at a
// time. Members announce themselves in the KV bucket herald_members with a
// heartbeat (the bucket's TTL drops members that stop); every member
// computes the same assignment from the sorted live members and consumes
// only its partitions.
//
// Who consumes a partition is recorded in the KV bucket herald_handover
// (one key per partition consumer), changed only by compare-and-set, so
// two members whose views of the membership differ for a moment never both
// take it. A partition changes hands only after its owner stopped:
//   - a live owner releases it: it stops pulling, takes back what it
//     received and did not start handling (broker.Revocable: the router
//     claims each delivery just before it handles it), waits until what it
//     started is settled, nacks what it took back in stream order (the last
//     nack confirmed, so the server processed them all), checks that the
//     server has nothing else pending, records the release with what it
//     gave back, and unpins. The server redelivers the nacked events
//     first, and the next owner hands them out in stream order (see
//     admission), so it starts at once with no duplicates;
//   - when an owner dies, its pin expires after the pin TTL and the next
//     owner waits until the partition's last delivery is more than twice
//     the ack wait old, then resets the consumer to its ack floor (see
//     acquire).

const (
	membersBucket = "herald_members"
	// handoverBucket records who consumes each partition of a key-ordered
	// group, and how its last owner let it go (key "<stream>.<consumer>").
	handoverBucket = "herald_handover"
	priorityGroup  = "herald"
	// memberTTL is how long a member that stopped heartbeating stays in
	// the membership.
	memberTTL = 3 * time.Second
	heartbeat = time.Second
	// pullExpiry bounds a pull request; pinned clients re-pull within it.
	pullExpiry = 2 * time.Second
)

// Handover states.
const (
	stateOwned     = "owned"
	stateReleased  = "released"
	stateAbandoned = "abandoned"
)

// handover is the value of a partition's key in handoverBucket.
type handover struct {
	State  string `json:"state"`
	Member string `json:"member"`
	// Exact is set on a release after which the server held nothing
	// pending but the nacked events, all queued for redelivery in stream
	// order: the next owner may start at once. Without it, some delivery
	// never reached the owner (it was in flight when it stopped pulling)
	// and comes back only when its ack wait ends: the next owner waits for
	// that.
	Exact bool `json:"exact,omitempty"`
	// Nacked is set when the release gave back (nacked) every delivery it
	// had not handled; Back lists their stream sequences: the next owner
	// hands them out in stream order whatever order the server redelivers
	// them in.
	Nacked bool     `json:"nacked,omitempty"`
	Back   []uint64 `json:"back,omitempty"`
}

type partition struct {
	p   int
	cc  jetstream.ConsumeContext // nil until acquired; guarded by orderedSub.mu
	rev uint64                   // revision of the handover record this member wrote; guarded by orderedSub.mu
	tr  *tracker                 // received and not yet settled
	adm admission                // what is handed to the router, and when
	// order serialises handing deliveries out (the receiver's and the
	// admission's timer), so they reach the router in the order admitted.
	order sync.Mutex
	// released is set once the partition is being given up: deliveries
	// not claimed yet are revoked from then on.
	released atomic.Bool
	stop     chan struct{} // closed on release
	stopOnce sync.Once
	// handedOver is closed when the release is over; the keepalive of the
	// partition's deliveries stops then.
	handedOver  chan struct{}
	releaseOnce sync.Once
	acquired    chan struct{} // closed when acquire returned
}

func newPartition(p int) *partition {
	return &partition{p: p, stop: make(chan struct{}), handedOver: make(chan struct{}), acquired: make(chan struct{}), tr: newTracker()}
}

func (p *partition) markReleased() {
	p.released.Store(true)
	p.adm.stop()
	p.stopOnce.Do(func() { close(p.stop) })
}

type orderedSub struct {
	b      *Broker
	si     *streamInfo
	opts   broker.SubscribeOptions
	base   string
	member string
	kv     jetstream.KeyValue
	key    string
	clean  jetstream.KeyValue // handoverBucket
	ch     chan *delivery
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup

	mu    sync.Mutex
	owned map[int]*partition
	// leaving holds the partitions being released, so that taking one
	// back waits until its release is over.
	leaving map[int]*partition
	cons    []jetstream.Consumer
	perPart int
}

func memberID() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, host)
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// PartitionConsumerName returns the consumer of partition p of a
// key-ordered group.
func PartitionConsumerName(group string, p int) string {
	return ConsumerName(group) + "_p" + strconv.Itoa(p)
}

func (b *Broker) subscribeOrdered(ctx context.Context, si *streamInfo, o broker.SubscribeOptions) (broker.Subscription, error) {
	if !b.pinned {
		return nil, fmt.Errorf("natsjs: topic %q group %q: per-key order across members needs NATS server 2.11 or later (connected to %s)", si.topic, o.Group, b.nc.ConnectedServerVersion())
	}
	if len(o.Routes) > 0 {
		return nil, fmt.Errorf("natsjs: topic %q group %q: route filters are not supported with KeyOrder; filter in the handler", si.topic, o.Group)
	}
	perPart := max(o.MaxInFlight/si.partitions, 16)
	s := &orderedSub{
		b: b, si: si, opts: o, base: ConsumerName(o.Group), member: memberID(),
		ch:      make(chan *delivery, perPart*si.partitions),
		done:    make(chan struct{}),
		owned:   map[int]*partition{},
		leaving: map[int]*partition{},
		perPart: perPart,
	}
	var err error
	if s.kv, err = b.memoryBucket(ctx, membersBucket, "Herald group members (heartbeats)", memberTTL); err != nil {
		return nil, err
	}
	s.key = si.name + "." + s.base + "." + s.member
	// No TTL: a record lives as long as its owner holds the partition.
	if s.clean, err = b.memoryBucket(ctx, handoverBucket, "Herald key-ordered partitions: who consumes each, how the last owner let it go", 0); err != nil {
		return nil, err
	}
	if err := s.ensureConsumers(ctx); err != nil {
		return nil, err
	}
	if _, err := s.kv.Put(ctx, s.key, []byte(time.Now().UTC().Format(time.RFC3339Nano))); err != nil {
		return nil, fmt.Errorf("natsjs: join group %q: %w", o.Group, err)
	}
	if err := s.reconcile(ctx); err != nil {
		s.stop()
		return nil, err
	}
	s.wg.Go(s.loop)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		_ = s.Close()
		return nil, broker.ErrClosed
	}
	b.ordered[s] = struct{}{}
	b.mu.Unlock()
	return s, nil
}

// memoryBucket creates (or updates) a KV bucket in memory that keeps one
// value per key for ttl.
func (b *Broker) memoryBucket(ctx context.Context, name, description string, ttl time.Duration) (jetstream.KeyValue, error) {
	var kv jetstream.KeyValue
	err := Retry(ctx, func(ctx context.Context) (err error) {
		kv, err = b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      name,
			Description: description,
			TTL:         ttl,
			History:     1,
			Storage:     jetstream.MemoryStorage,
			Replicas:    b.Replicas(),
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("natsjs: KV bucket %s: %w", name, err)
	}
	return kv, nil
}

// ensureConsumers creates every partition consumer of the group with one
// start point, so no partition skips messages another delivers.
func (s *orderedSub) ensureConsumers(ctx context.Context) error {
	o := s.opts
	if o.Start.Kind == broker.StartNew {
		var st jetstream.Stream
		err := Retry(ctx, func(ctx context.Context) (err error) {
			st, err = s.b.js.Stream(ctx, s.si.name)
			return err
		})
		if err != nil {
			return fmt.Errorf("natsjs: topic %q: %w", s.si.topic, err)
		}
		o.Start = broker.FromSequence(st.CachedInfo().State.LastSeq + 1)
	}
	pinTTL := s.opts.AckWait + pullExpiry + time.Second
	s.cons = make([]jetstream.Consumer, s.si.partitions)
	for p := range s.si.partitions {
		filter := []string{s.si.prefixes[p] + ">"}
		c, err := s.b.ensureConsumer(ctx, s.si, PartitionConsumerName(o.Group, p), broker.SubscribeOptions{
			Group: o.Group, Start: o.Start, AckWait: o.AckWait, MaxInFlight: s.perPart,
		}, filter, func(c *jetstream.ConsumerConfig) {
			c.PriorityPolicy = jetstream.PriorityPolicyPinned
			c.PriorityGroups = []string{priorityGroup}
			c.PinnedTTL = pinTTL
		})
		if err != nil {
			return err
		}
		s.cons[p] = c
	}
	return nil
}

func (s *orderedSub) loop() {
	t := time.NewTicker(heartbeat)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), heartbeat)
		_, err := s.kv.Put(ctx, s.key, []byte(time.Now().UTC().Format(time.RFC3339Nano)))
		if err == nil {
			err = s.reconcile(ctx)
		}
		if err == nil {
			s.checkOwnership(ctx)
		}
		cancel()
		if err != nil && !errors.Is(err, context.Canceled) {
			s.b.log.Debug("natsjs: group membership", "topic", s.si.topic, "group", s.opts.Group, "error", err)
		}
	}
}

// members returns the live members of the group, sorted.
func (s *orderedSub) members(ctx context.Context) ([]string, error) {
	prefix := s.si.name + "." + s.base + "."
	lister, err := s.kv.ListKeysFiltered(ctx, prefix+">")
	if err != nil {
		return nil, err
	}
	var out []string
	for k := range lister.Keys() {
		out = append(out, strings.TrimPrefix(k, prefix))
	}
	// The channel closes once every key was listed; Stop then only
	// releases the watcher.
	_ = lister.Stop()
	slices.Sort(out)
	return out, nil
}

// reconcile takes the partitions assigned to this member and releases the
// others.
func (s *orderedSub) reconcile(ctx context.Context) error {
	members, err := s.members(ctx)
	if err != nil {
		return fmt.Errorf("list members: %w", err)
	}
	// A live member always counts itself: if its own heartbeat lapsed
	// (a stalled process), the others may take its partitions, and the
	// handover records keep the two from both consuming one; releasing
	// everything here would only add churn.
	if !slices.Contains(members, s.member) {
		members = append(members, s.member)
		slices.Sort(members)
	}
	idx := slices.Index(members, s.member)
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.done:
		return nil
	default:
	}
	want := map[int]bool{}
	for p := range s.si.partitions {
		if p%len(members) == idx {
			want[p] = true
		}
	}
	for p, part := range s.owned {
		if !want[p] {
			delete(s.owned, p)
			s.leaving[p] = part
			s.wg.Go(func() { s.release(part, true) })
		}
	}
	for p := range want {
		if s.owned[p] != nil {
			continue
		}
		part := newPartition(p)
		prev := s.leaving[p]
		s.owned[p] = part
		s.wg.Go(func() { s.acquire(part, prev) })
	}
	return nil
}

// checkOwnership gives up, without settling anything, the partitions whose
// handover record another member took: this member was stalled long enough
// to be taken for dead, and the new owner delivers the partition again
// from its ack floor.
func (s *orderedSub) checkOwnership(ctx context.Context) {
	s.mu.Lock()
	var parts []*partition
	for _, part := range s.owned {
		if part.cc != nil {
			parts = append(parts, part)
		}
	}
	s.mu.Unlock()
	for _, part := range parts {
		e, err := s.clean.Get(ctx, s.handoverKey(part.p))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			// The record is gone (the bucket lives in memory: the
			// server restarted); write it again, unless another member
			// got there first.
			val, _ := json.Marshal(handover{State: stateOwned, Member: s.member})
			rev, cerr := s.clean.Create(ctx, s.handoverKey(part.p), val)
			if cerr == nil {
				s.mu.Lock()
				part.rev = rev
				s.mu.Unlock()
				continue
			}
			if e, err = s.clean.Get(ctx, s.handoverKey(part.p)); err != nil {
				continue
			}
		}
		if err != nil {
			continue // cannot tell
		}
		if h, ok := parseHandover(e); ok && h.State == stateOwned && h.Member == s.member {
			continue
		}
		s.mu.Lock()
		if s.owned[part.p] == part {
			delete(s.owned, part.p)
		}
		s.mu.Unlock()
		s.b.log.Warn("natsjs: another member took over a partition while this one was stalled; dropping its deliveries",
			"topic", s.si.topic, "group", s.opts.Group, "partition", part.p)
		part.markReleased()
		part.tr.revokeQueued()
		part.releaseOnce.Do(func() {
			if part.cc != nil {
				part.cc.Stop()
			}
			close(part.handedOver)
		})
	}
}

func parseHandover(e jetstream.KeyValueEntry) (handover, bool) {
	var h handover
	if e == nil || json.Unmarshal(e.Value(), &h) != nil || h.State == "" {
		return handover{}, false
	}
	return h, true
}

// acquire starts consuming a partition once its previous owner let it go
// (see take), after prev, this member's own release of it, if any, ended.
func (s *orderedSub) acquire(part *partition, prev *partition) {
	defer close(part.acquired)
	if prev != nil {
		select {
		case <-prev.handedOver:
		case <-part.stop:
			return
		}
	}
	var rev uint64
	var restore []byte
	for {
		ok, r, old, pending := s.take(part.p)
		if ok {
			rev, restore = r, old
			// Holding ends early only if nothing arrived for twice the ack
			// wait: a starved process receives late, not never.
			part.adm.expectBack(pending, 2*s.opts.AckWait, func(gen uint64) {
				// Flushed under order, so nothing the receiver admits
				// meanwhile is handed out before what was held.
				part.order.Lock()
				defer part.order.Unlock()
				ds, missing := part.adm.flush(gen)
				if missing > 0 {
					s.b.log.Warn("natsjs: stopped waiting for deliveries that were pending when this member took the partition; if they come later, their keys' order may break",
						"topic", s.si.topic, "group", s.opts.Group, "partition", part.p, "missing", missing, "held", len(ds))
				}
				for _, d := range ds {
					s.handOut(part, d)
				}
			})
			break
		}
		select {
		case <-part.stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	cons := s.cons[part.p]
	s.mu.Lock()
	defer s.mu.Unlock()
	if part.released.Load() {
		s.giveBackRecord(part.p, rev, restore)
		return
	}
	p := part.p
	cc, err := cons.Consume(s.receiver(part),
		jetstream.PullMaxMessages(s.perPart),
		jetstream.PullExpiry(pullExpiry),
		jetstream.PullPriorityGroup(priorityGroup),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			s.b.log.Debug("natsjs: consume partition", "topic", s.si.topic, "group", s.opts.Group, "partition", p, "error", err)
		}))
	if err != nil {
		// Give it back: the next reconcile tries again.
		s.b.log.Warn("natsjs: consume partition", "topic", s.si.topic, "group", s.opts.Group, "partition", p, "error", err)
		s.giveBackRecord(p, rev, restore)
		part.markReleased()
		if s.owned[p] == part {
			delete(s.owned, p)
		}
		return
	}
	part.cc, part.rev = cc, rev
	// Keep this partition's deliveries alive, those queued as well as
	// those being handled, until its release is over.
	s.wg.Go(func() { part.tr.keepAlive(s.opts.AckWait, part.handedOver, nil) })
}

// giveBackRecord puts back the handover record that take replaced, for a
// partition taken but never consumed: a release raced the acquisition, or
// the consumer could not be reset or started. It is one short request.
func (s *orderedSub) giveBackRecord(p int, rev uint64, old []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var err error
	if old == nil {
		err = s.clean.Delete(ctx, s.handoverKey(p), jetstream.LastRevision(rev))
	} else {
		_, err = s.clean.Update(ctx, s.handoverKey(p), old, rev)
	}
	if err != nil {
		s.b.log.Debug("natsjs: give back partition record", "topic", s.si.topic, "group", s.opts.Group, "partition", p, "error", err)
	}
}

// take records this member as the owner of partition p if its previous
// owner let it go, and reports the record's revision, the value it
// replaced (nil: none) and, after a release that gave its deliveries
// back, what is pending: the sequences given back and how many others
// (see admission). Nothing may be pending on the partition that would come
// back out of stream order:
//   - while a client holds the partition's pin (its owner still consumes
//     it, or died less than the pin TTL ago), take waits;
//   - after a release recorded as exact, it takes the partition at once:
//     what is pending is what the previous owner gave back, queued for
//     redelivery before anything else;
//   - after a release that gave everything back but was not exact (some
//     delivery never reached the previous owner), it waits until the
//     partition's last delivery is an ack wait (and a margin) old, so that
//     the deliveries that went astray came due; the server queues them
//     behind the nacked ones whatever their sequences, so the admission
//     holds what arrives until as many deliveries as were pending came;
//   - after a release whose nacks failed, it takes the partition at once
//     and resets the consumer to its ack floor if anything is pending;
//   - otherwise (the owner crashed, was stalled past its pin TTL, gave up
//     deliveries it could not settle, or there is no record) it takes the
//     partition when nothing is pending, or when the last delivery is more
//     than twice the ack wait (plus a margin) old: by then a crashed owner
//     cannot be handling any of it. Then it resets the consumer to its ack
//     floor: JetStream redelivers expired messages in the order their ack
//     waits ran out, which is not stream order when the owner's keepalive
//     reached some of them and not others before it died.
//
// After a reset the partition is delivered again in stream order from its
// first unacknowledged event (events above it that were acknowledged come
// again: at-least-once). Servers before 2.14 cannot reset; there take
// waits, after a release whose nacks failed, until the last delivery is an
// ack wait (and a margin) old, and order is kept only as far as the ack
// waits run out in order.
func (s *orderedSub) take(p int) (ok bool, rev uint64, old []byte, pending pendingAtTake) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, err := s.cons[p].Info(ctx)
	if err != nil || pinned(info) {
		return false, 0, nil, pending
	}
	e, err := s.clean.Get(ctx, s.handoverKey(p))
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, 0, nil, pending
	}
	if err != nil {
		e = nil
	}
	h, known := parseHandover(e)
	since := func(d time.Duration) bool {
		last := info.Delivered.Last
		return last == nil || time.Since(*last) > d
	}
	reset := false
	gaveBack := func() pendingAtTake {
		return pendingAtTake{back: h.Back, others: max(info.NumAckPending-len(h.Back), 0), below: info.Delivered.Stream}
	}
	switch {
	case known && h.State == stateReleased && h.Exact:
		pending = gaveBack()
	case known && h.State == stateReleased && h.Nacked:
		// Some deliveries never reached the previous owner: they come
		// due when their ack waits end.
		if info.NumAckPending > 0 && !since(s.opts.AckWait+time.Second) {
			return false, 0, nil, pending
		}
		pending = gaveBack()
	case known && h.State == stateReleased:
		// A nack failed: what is pending comes back in no known order.
		switch {
		case info.NumAckPending == 0:
		case s.b.reset:
			reset = true
		case !since(s.opts.AckWait + time.Second):
			return false, 0, nil, pending
		}
	case info.NumAckPending == 0:
	case !since(2*s.opts.AckWait + time.Second):
		return false, 0, nil, pending
	default:
		reset = true
	}
	val, _ := json.Marshal(handover{State: stateOwned, Member: s.member})
	if e == nil {
		rev, err = s.clean.Create(ctx, s.handoverKey(p), val)
	} else {
		old = e.Value()
		rev, err = s.clean.Update(ctx, s.handoverKey(p), val, e.Revision())
	}
	if err != nil {
		return false, 0, nil, pendingAtTake{} // another member took it first, or the server is away
	}
	if reset && !s.resetToAckFloor(p) {
		// Consuming without the reset would start past the deliveries
		// the previous owner left pending: give the partition back and
		// try again.
		s.giveBackRecord(p, rev, old)
		return false, 0, nil, pendingAtTake{}
	}
	pending.afterCrash = reset
	if pending.others > 0 {
		s.b.log.Info("natsjs: took over a partition with deliveries that never reached its previous member; holding what arrives until they came",
			"topic", s.si.topic, "group", s.opts.Group, "partition", p, "given_back", len(pending.back), "others", pending.others)
	}
	return true, rev, old, pending
}

// pinned reports whether a client holds the partition's pin: a member that
// still consumes it (one whose heartbeat lapsed, or that is releasing it),
// or one that died less than the pin TTL ago. Its deliveries are not due
// yet, and a reset would hand them, earlier ones again, to that client.
func pinned(info *jetstream.ConsumerInfo) bool {
	for _, g := range info.PriorityGroups {
		if g.Group == priorityGroup && g.PinnedClientID != "" {
			return true
		}
	}
	return false
}

func (s *orderedSub) handoverKey(p int) string {
	return s.si.name + "." + PartitionConsumerName(s.opts.Group, p)
}

// resetToAckFloor makes partition p's consumer deliver again from its
// first unacknowledged event, and reports whether the partition may be
// consumed now: false if the reset failed. On servers before 2.14, which
// cannot reset a consumer, the pending deliveries come back in the order
// their ack waits ran out.
func (s *orderedSub) resetToAckFloor(p int) bool {
	name := PartitionConsumerName(s.opts.Group, p)
	if !s.b.reset {
		s.b.log.Warn("natsjs: a member of the group stopped without settling its deliveries; the server cannot reset the partition to its first unacknowledged event (needs NATS 2.14 or later), so they are redelivered in the order their ack waits end",
			"topic", s.si.topic, "group", s.opts.Group, "partition", p)
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var (
		resp *jetstream.ConsumerResetResponse
		err  error
	)
	if n := s.b.failResets.Load(); n > 0 && s.b.failResets.CompareAndSwap(n, n-1) {
		err = errors.New("refused by the test")
	} else {
		resp, err = s.b.js.ResetConsumer(ctx, s.si.name, name)
	}
	if err != nil {
		s.b.log.Warn("natsjs: reset partition to its first unacknowledged event; trying again", "topic", s.si.topic, "group", s.opts.Group, "partition", p, "error", err)
		return false
	}
	s.b.log.Info("natsjs: took over a partition whose previous member did not settle or give back all of its deliveries; delivering again from its first unacknowledged event",
		"topic", s.si.topic, "group", s.opts.Group, "partition", p, "seq", resp.ResetSeq)
	return true
}

func (s *orderedSub) receiver(part *partition) jetstream.MessageHandler {
	return func(m jetstream.Msg) {
		d := newDelivery(m, s.b, s.si, s.opts.ConfirmAcks, part.tr, part)
		part.order.Lock()
		defer part.order.Unlock()
		for _, d := range part.adm.admit(d, part.tr) {
			s.handOut(part, d)
		}
	}
}

// handOut passes an admitted delivery to Next. Called with part.order held.
func (s *orderedSub) handOut(part *partition, d *delivery) {
	if part.released.Load() {
		d.revoke() // the release gives it back with the others
		return
	}
	select {
	case s.ch <- d:
	case <-s.done:
		d.revoke()
	}
}

// release stops consuming part and hands it over (see the top of the
// file). connected is false when the connection is gone and nothing can be
// settled or recorded any more.
func (s *orderedSub) release(part *partition, connected bool) {
	part.markReleased()
	s.mu.Lock()
	cc, rev := part.cc, part.rev
	s.mu.Unlock()
	first := false
	part.releaseOnce.Do(func() { first = true })
	if !first {
		return
	}
	defer func() {
		close(part.handedOver)
		s.mu.Lock()
		if s.leaving[part.p] == part {
			delete(s.leaving, part.p)
		}
		s.mu.Unlock()
	}()
	if cc == nil {
		// Never consumed: nothing to hand over once the acquisition
		// (which sees released) gave its record back.
		<-part.acquired
		return
	}
	// Drain hands what the client already pulled to the receiver, which
	// tracks it as revoked.
	cc.Drain()
	<-cc.Closed()
	part.tr.revokeQueued()
	// What was claimed is being handled: wait for it, keeping it alive,
	// for at most the ack wait.
	deadline := time.Now().Add(s.opts.AckWait)
	for part.tr.claimed() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !connected {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	state := stateReleased
	if n := part.tr.claimed(); n > 0 {
		state = stateAbandoned
		s.b.log.Warn("natsjs: handing over a partition with deliveries still being handled after the ack wait; the next owner delivers the partition again from its first unacknowledged event",
			"topic", s.si.topic, "group", s.opts.Group, "partition", part.p, "handling", n)
	}
	back := part.tr.revoked()
	nacked := s.giveBack(ctx, part.p, back) && state == stateReleased
	exact := nacked && s.pendingAtMost(ctx, part.p, len(back))
	h := handover{State: state, Member: s.member, Exact: exact, Nacked: nacked}
	if nacked {
		for _, d := range back {
			h.Back = append(h.Back, d.Sequence())
		}
	}
	val, _ := json.Marshal(h)
	if _, err := s.clean.Update(ctx, s.handoverKey(part.p), val, rev); err != nil {
		s.b.log.Debug("natsjs: record partition release", "topic", s.si.topic, "group", s.opts.Group, "partition", part.p, "error", err)
	}
	// Unpinning after the record: a member that sees the partition
	// unpinned sees the record too.
	st, err := s.b.js.Stream(ctx, s.si.name)
	if err == nil {
		err = st.UnpinConsumer(ctx, PartitionConsumerName(s.opts.Group, part.p), priorityGroup)
	}
	if err != nil {
		s.b.log.Debug("natsjs: unpin", "topic", s.si.topic, "group", s.opts.Group, "partition", part.p, "error", err)
	}
}

// giveBack nacks ds, in stream order, for redelivery at once. The last nack
// waits for the server's reply: the server processes the acknowledgements
// of one connection in order, so then it has processed every earlier ack
// and nack of this member. It reports whether every nack was sent.
func (s *orderedSub) giveBack(ctx context.Context, p int, ds []*delivery) bool {
	for i, d := range ds {
		var err error
		if i == len(ds)-1 {
			_, err = s.b.nc.RequestWithContext(ctx, d.m.Reply(), []byte("-NAK"))
		} else {
			err = d.m.Nak()
		}
		d.done()
		if err != nil {
			s.b.log.Debug("natsjs: give back delivery", "topic", s.si.topic, "group", s.opts.Group, "partition", p, "seq", d.Sequence(), "error", err)
			for _, rest := range ds[i+1:] {
				rest.done()
			}
			return false
		}
	}
	return true
}

// pendingAtMost reports whether partition p's consumer soon has at most n
// deliveries pending: the n given back, and nothing that went astray.
func (s *orderedSub) pendingAtMost(ctx context.Context, p, n int) bool {
	deadline := time.Now().Add(time.Second)
	for {
		info, err := s.cons[p].Info(ctx)
		if err == nil && info.NumAckPending <= n {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Next returns the next delivery of an owned partition. Deliveries of a
// partition released meanwhile are skipped: the release gives them back.
func (s *orderedSub) Next(ctx context.Context) (broker.Delivery, error) {
	for {
		select {
		case <-s.done:
			return nil, broker.ErrClosed
		default:
		}
		select {
		case d := <-s.ch:
			if d.part.released.Load() && d.revoke() {
				continue
			}
			return d, nil
		case <-s.done:
			return nil, broker.ErrClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (s *orderedSub) stop() {
	s.once.Do(func() { close(s.done) })
}

// Close leaves the group: it releases every partition (see release: what
// was handed out and claimed is waited for, up to the ack wait; the rest
// goes back in stream order) and removes itself from the membership so the
// others take over at once.
func (s *orderedSub) Close() error {
	first := false
	s.once.Do(func() { close(s.done); first = true })
	if !first {
		return nil
	}
	s.mu.Lock()
	parts := make([]*partition, 0, len(s.owned))
	for _, p := range s.owned {
		p.markReleased() // ends acquisitions in progress
		parts = append(parts, p)
	}
	s.owned = map[int]*partition{}
	s.mu.Unlock()
	connected := s.b.nc.IsConnected()
	var wg sync.WaitGroup
	for _, p := range parts {
		wg.Go(func() { s.release(p, connected) })
	}
	wg.Wait()
	s.wg.Wait() // the heartbeat loop, acquisitions, releases and keepalives
	if connected && s.b.nc.IsConnected() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = s.kv.Delete(ctx, s.key)
		cancel()
	}
	s.b.mu.Lock()
	delete(s.b.ordered, s)
	s.b.mu.Unlock()
	return nil
}
