package natsjs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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
// only its partitions. A partition changes hands only after its owner
// stopped: on a graceful move the owner settles its in-flight deliveries
// and unpins; when an owner dies, the pin expires after the pin TTL, which
// is longer than the ack wait plus a pull, so its unacknowledged deliveries
// are due for redelivery (and come first) when the next owner is pinned.

const (
	membersBucket = "herald_members"
	// handoverBucket records the partitions a member released cleanly,
	// everything it had received settled (key "<stream>.<consumer>").
	handoverBucket = "herald_handover"
	handoverTTL    = 24 * time.Hour
	priorityGroup  = "herald"
	// memberTTL is how long a member that stopped heartbeating stays in
	// the membership.
	memberTTL = 3 * time.Second
	heartbeat = time.Second
	// pullExpiry bounds a pull request; pinned clients re-pull within it.
	pullExpiry = 2 * time.Second
)

type partition struct {
	p        int
	cc       jetstream.ConsumeContext // nil until acquired; guarded by orderedSub.mu
	tr       *tracker                 // received and not yet settled
	released atomic.Bool
	// giveUp is when a release stops waiting for deliveries to be settled
	// (unix nanoseconds); keepalive stops then too, so what is left
	// expires within an ack wait.
	giveUp   atomic.Int64
	stop     chan struct{} // closed on release
	stopOnce sync.Once
}

func (p *partition) markReleased() {
	p.released.Store(true)
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

	mu      sync.Mutex
	owned   map[int]*partition
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
		perPart: perPart,
	}
	var err error
	if s.kv, err = b.memoryBucket(ctx, membersBucket, "Herald group members (heartbeats)", memberTTL); err != nil {
		return nil, err
	}
	s.key = si.name + "." + s.base + "." + s.member
	if s.clean, err = b.memoryBucket(ctx, handoverBucket, "Herald partitions released with everything settled", handoverTTL); err != nil {
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
	kv, err := b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      name,
		Description: description,
		TTL:         ttl,
		History:     1,
		Storage:     jetstream.MemoryStorage,
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
		st, err := s.b.js.Stream(ctx, s.si.name)
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
	// pins keep the two from both receiving; releasing everything here
	// would only add churn.
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
			s.wg.Go(func() { s.release(part, true) })
		}
	}
	for p := range want {
		if s.owned[p] != nil {
			continue
		}
		part := &partition{p: p, stop: make(chan struct{}), tr: newTracker()}
		s.owned[p] = part
		s.wg.Go(func() { s.acquire(part) })
	}
	return nil
}

// acquire starts consuming a partition once nothing is in flight on it.
// Deliveries its previous owner did not settle must come back before any
// later event of their keys. A live owner releases a partition by
// draining it, settling its deliveries (keeping them alive for at most an
// ack wait) and unpinning it; what it had buffered it gives back with a
// nack, in stream order, so the server redelivers those first and in
// order. Acquire starts when the consumer has no pending acks, or when the
// partition's last delivery is more than twice the ack wait (plus a
// margin) old: by then whatever the previous owner left has been nacked or
// has expired, and a crashed owner cannot be handling any of it any more.
// Acquire also waits while another client holds the partition's pin. After
// a clean release (recorded in handoverBucket) that is enough. After
// a crash it is not: JetStream redelivers expired messages in the order
// their ack waits ran out, which is not stream order when the owner's
// keepalive reached some of them and not others before it died; so
// acquire resets the consumer to its ack floor, and the partition is
// delivered again in stream order from its first unacknowledged event
// (events above it that were acknowledged come again: at-least-once).
func (s *orderedSub) acquire(part *partition) {
	for {
		free, crashed := s.free(part.p)
		if free {
			if crashed {
				s.resetToAckFloor(part.p)
			}
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
		part.markReleased()
		if s.owned[p] == part {
			delete(s.owned, p)
		}
		return
	}
	part.cc = cc
	// Keep this partition's deliveries alive until it is released and
	// they are settled, or the subscription closes.
	s.wg.Go(func() {
		part.tr.keepAlive(s.opts.AckWait, s.done, func() bool {
			if !part.released.Load() {
				return false
			}
			g := part.giveUp.Load()
			return part.tr.len() == 0 || g != 0 && time.Now().UnixNano() > g
		})
	})
}

// free reports whether partition p can be consumed now (see acquire), and
// whether its last owner crashed, leaving deliveries that need a reset.
func (s *orderedSub) free(p int) (free, crashed bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, err := s.cons[p].Info(ctx)
	switch {
	case err != nil:
		return false, false
	case info.NumAckPending == 0:
		return true, false
	case pinned(info):
		return false, false
	}
	last := info.Delivered.Last
	if last != nil && time.Since(*last) <= 2*s.opts.AckWait+time.Second {
		return false, false
	}
	return true, !s.releasedCleanly(ctx, p, last)
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

// releasedCleanly reports whether partition p's last owner released it
// with everything settled, after the partition's last delivery.
func (s *orderedSub) releasedCleanly(ctx context.Context, p int, lastDelivery *time.Time) bool {
	e, err := s.clean.Get(ctx, s.handoverKey(p))
	if err != nil {
		return false
	}
	return lastDelivery != nil && !e.Created().Before(*lastDelivery)
}

// resetToAckFloor makes partition p's consumer deliver again from its
// first unacknowledged event. On servers before 2.14, which cannot reset a
// consumer, the pending deliveries come back in the order their ack waits
// ran out.
func (s *orderedSub) resetToAckFloor(p int) {
	name := PartitionConsumerName(s.opts.Group, p)
	if !s.b.reset {
		s.b.log.Warn("natsjs: a member of the group stopped without settling its deliveries; the server cannot reset the partition to its first unacknowledged event (needs NATS 2.14 or later), so they are redelivered in the order their ack waits end",
			"topic", s.si.topic, "group", s.opts.Group, "partition", p)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := s.b.js.ResetConsumer(ctx, s.si.name, name)
	if err != nil {
		s.b.log.Warn("natsjs: reset partition to its first unacknowledged event", "topic", s.si.topic, "group", s.opts.Group, "partition", p, "error", err)
		return
	}
	s.b.log.Info("natsjs: took over a partition from a member that stopped without settling; delivering again from its first unacknowledged event",
		"topic", s.si.topic, "group", s.opts.Group, "partition", p, "seq", resp.ResetSeq)
}

func (s *orderedSub) receiver(part *partition) jetstream.MessageHandler {
	return func(m jetstream.Msg) {
		d := newDelivery(m, s.b, s.si, s.opts.ConfirmAcks, part.tr, part)
		part.tr.add(d)
		select {
		case s.ch <- d:
		case <-s.done:
			_ = d.Nack(context.Background(), 0)
		}
	}
}

// release stops consuming part, waits (up to the ack wait) until its
// deliveries are settled, then unpins it so the next owner starts at once.
func (s *orderedSub) release(part *partition, unpin bool) {
	part.markReleased()
	s.mu.Lock()
	cc := part.cc
	s.mu.Unlock()
	if cc == nil {
		return // never consumed: nothing to hand over
	}
	// Drain hands what the client already pulled to the receiver, which
	// queues it for Next to return to the group; Stop would drop it and
	// leave it pending until its ack wait ran out.
	deadline := time.Now().Add(s.opts.AckWait)
	part.giveUp.Store(deadline.UnixNano())
	cc.Drain()
	<-cc.Closed()
	for part.tr.len() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !unpin {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if part.tr.len() == 0 {
		// Everything received was acked or nacked: the next owner needs
		// no reset.
		if _, err := s.clean.Put(ctx, s.handoverKey(part.p), []byte(s.member)); err != nil {
			s.b.log.Debug("natsjs: record clean release", "topic", s.si.topic, "group", s.opts.Group, "partition", part.p, "error", err)
		}
	}
	st, err := s.b.js.Stream(ctx, s.si.name)
	if err == nil {
		err = st.UnpinConsumer(ctx, PartitionConsumerName(s.opts.Group, part.p), priorityGroup)
	}
	if err != nil {
		s.b.log.Debug("natsjs: unpin", "topic", s.si.topic, "group", s.opts.Group, "partition", part.p, "error", err)
	}
}

// Next returns the next delivery of an owned partition. Deliveries of a
// partition released meanwhile go back to the group.
func (s *orderedSub) Next(ctx context.Context) (broker.Delivery, error) {
	for {
		select {
		case <-s.done:
			return nil, broker.ErrClosed
		default:
		}
		select {
		case d := <-s.ch:
			if d.part.released.Load() {
				_ = d.Nack(ctx, 0)
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

// Close leaves the group: it stops consuming, hands buffered deliveries
// back, waits (up to the ack wait) for the ones handed out to be settled,
// unpins its partitions and removes itself from the membership so the
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
	s.wg.Wait() // the heartbeat loop, acquisitions and releases in progress
	for _, p := range parts {
		if p.cc != nil {
			p.cc.Drain()
		}
	}
	for _, p := range parts {
		if p.cc != nil {
			<-p.cc.Closed()
		}
	}
	for {
		select {
		case d := <-s.ch:
			_ = d.Nack(context.Background(), 0)
			continue
		default:
		}
		break
	}
	var wg sync.WaitGroup
	for _, p := range parts {
		wg.Go(func() { s.release(p, s.b.nc.IsConnected()) })
	}
	wg.Wait()
	if s.b.nc.IsConnected() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = s.kv.Delete(ctx, s.key)
		cancel()
	}
	s.b.mu.Lock()
	delete(s.b.ordered, s)
	s.b.mu.Unlock()
	return nil
}
