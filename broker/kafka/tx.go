package kafka

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/heraldhq/herald/broker"
)

// Tx is an open Kafka transaction, valid inside the function given to
// Transact. It is not safe for concurrent use.
type Tx struct {
	b         *Broker
	cl        *kgo.Client
	acks      []*delivery
	published bool
}

// Publish produces msgs in the transaction. They are acknowledged by the
// cluster when Publish returns but visible to consumers (which read
// committed records only) only if the transaction commits.
func (tx *Tx) Publish(ctx context.Context, msgs ...*broker.Message) error {
	if err := tx.b.publish(ctx, tx.cl, msgs); err != nil {
		return err
	}
	tx.published = true
	return nil
}

// Ack settles d as part of the transaction: its offset (and commit
// metadata) is committed with the transaction's records, atomically. d
// must come from a subscription of the same Broker and must not be
// settled otherwise.
func (tx *Tx) Ack(d broker.Delivery) error {
	dd, ok := d.(*delivery)
	if !ok || dd.s.b != tx.b {
		return fmt.Errorf("kafka: tx ack: %v is not a delivery of this broker", d)
	}
	tx.acks = append(tx.acks, dd)
	return nil
}

// Transact runs fn in a transaction: the messages fn publishes with
// tx.Publish and the deliveries it acks with tx.Ack are committed
// together, or not at all. This is exactly-once consume-transform-produce:
// a delivery acked in a committed transaction is never redelivered to its
// group, and a transaction that fails (fn returns an error, the commit
// fails, or the partition moved to another member, which fences the
// commit) leaves no visible record and its deliveries unsettled (they are
// redelivered after their ack wait, or nack them).
//
// Transactions of one Broker run one at a time. The transactional id is
// set with WithTransactionalID.
func (b *Broker) Transact(ctx context.Context, fn func(tx *Tx) error) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	b.txMu.Lock()
	defer b.txMu.Unlock()
	if b.txcl == nil {
		cl, err := kgo.NewClient(append(b.cfg.producerOpts(), kgo.TransactionalID(b.cfg.txnID))...)
		if err != nil {
			return fmt.Errorf("kafka: transactional client %q: %w", b.cfg.txnID, err)
		}
		b.txcl = cl
	}
	cl := b.txcl
	if err := cl.BeginTransaction(); err != nil {
		return fmt.Errorf("kafka: begin transaction: %w", err)
	}
	tx := &Tx{b: b, cl: cl}
	if err := fn(tx); err != nil {
		return errors.Join(err, b.abort(ctx, cl))
	}
	if !tx.published {
		// Nothing to make atomic: end the empty transaction and ack.
		if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			return fmt.Errorf("kafka: end transaction: %w", err)
		}
		for _, d := range tx.acks {
			if err := d.Ack(ctx); err != nil {
				return err
			}
		}
		return nil
	}
	if err := b.commitTx(ctx, cl, tx); err != nil {
		return errors.Join(err, b.abort(ctx, cl))
	}
	return nil
}

func (b *Broker) abort(ctx context.Context, cl *kgo.Client) error {
	actx, cancel := waitCtx(ctx, 30*time.Second)
	defer cancel()
	if err := cl.AbortBufferedRecords(actx); err != nil {
		return fmt.Errorf("kafka: abort transaction: %w", err)
	}
	if err := cl.EndTransaction(actx, kgo.TryAbort); err != nil {
		return fmt.Errorf("kafka: abort transaction: %w", err)
	}
	return nil
}

// txGroup is what one subscription contributes to a transaction.
type txGroup struct {
	s       *subscription
	entries []*entry
	parts   []partCommit
}

// commitTx commits the acks' offsets inside the transaction and ends it.
// Each subscription's commitMu is held throughout, so no plain commit of
// an older point can land after the transaction's.
func (b *Broker) commitTx(ctx context.Context, cl *kgo.Client, tx *Tx) error {
	bySub := map[*subscription]*txGroup{}
	var groups []*txGroup
	for _, d := range tx.acks {
		g := bySub[d.s]
		if g == nil {
			g = &txGroup{s: d.s}
			bySub[d.s] = g
			groups = append(groups, g)
		}
	}
	sort.Slice(groups, func(i, j int) bool { return groups[i].s.groupID < groups[j].s.groupID })
	for _, g := range groups {
		g.s.commitMu.Lock()
		defer g.s.commitMu.Unlock()
	}

	// Claim the deliveries: out of the inflight list so no ack wait
	// redelivers them while the transaction commits.
	release := func(settled bool) {
		for _, g := range groups {
			s := g.s
			s.mu.Lock()
			for _, e := range g.entries {
				e.txn = false
				s.inflight--
				switch {
				case e.p.gone:
					e.state = stDropped
				case settled:
					e.state = stSettled
					e.p.unsettled--
				default:
					e.state = stInflight
					s.insertInflight(e)
				}
			}
			if settled {
				for _, pc := range g.parts {
					if !pc.p.gone {
						pc.p.popSettled()
						pc.p.committed, pc.p.commMeta = pc.off, pc.meta
						s.resolveLocked(pc)
					}
				}
			}
			s.notifyLocked()
			s.mu.Unlock()
		}
	}
	for _, d := range tx.acks {
		g := bySub[d.s]
		s := d.s
		s.mu.Lock()
		e := d.e
		if e.token != d.token || e.state != stInflight || e.p.gone || e.p.revoking {
			state := e.state
			s.mu.Unlock()
			release(false)
			if state == stDropped || e.p.gone || e.p.revoking {
				return fmt.Errorf("kafka: tx ack %v: %w", d, ErrPartitionRevoked)
			}
			return fmt.Errorf("kafka: tx ack %v: the delivery is no longer current (settled, or redelivered after its ack wait)", d)
		}
		s.removeInflight(e)
		s.inflight++
		e.state = stBusy
		e.txn = true
		g.entries = append(g.entries, e)
		s.mu.Unlock()
	}

	for _, g := range groups {
		s := g.s
		s.mu.Lock()
		seen := map[*part]bool{}
		for _, e := range g.entries {
			p := e.p
			if seen[p] {
				continue
			}
			seen[p] = true
			g.parts = append(g.parts, p.snapshot(true))
		}
		uncovered := int64(-1)
		for _, e := range g.entries {
			for _, pc := range g.parts {
				if pc.p == e.p && e.rec.Offset >= pc.off && e.rec.Offset >= pc.cover {
					uncovered = e.rec.Offset
				}
			}
		}
		s.mu.Unlock()
		if uncovered >= 0 {
			release(false)
			return fmt.Errorf("kafka: tx ack of offset %d in group %q: too many unsettled records before it to record the ack; settle them first", uncovered, s.group)
		}
	}

	id, epoch, err := cl.ProducerID(ctx)
	if err != nil {
		release(false)
		return fmt.Errorf("kafka: transaction producer id: %w", err)
	}
	for _, g := range groups {
		if err := b.txnOffsetCommit(ctx, cl, id, epoch, g); err != nil {
			release(false)
			return err
		}
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		release(false)
		return fmt.Errorf("kafka: commit transaction: %w", err)
	}
	release(true)
	return nil
}

func (b *Broker) txnOffsetCommit(ctx context.Context, cl *kgo.Client, id int64, epoch int16, g *txGroup) error {
	s := g.s
	add := kmsg.NewPtrAddOffsetsToTxnRequest()
	add.TransactionalID = b.cfg.txnID
	add.ProducerID = id
	add.ProducerEpoch = epoch
	add.Group = s.groupID
	aresp, err := add.RequestWith(ctx, cl)
	if err == nil {
		err = kerr.ErrorForCode(aresp.ErrorCode)
	}
	if err != nil {
		return fmt.Errorf("kafka: add group %q offsets to transaction: %w", s.groupID, err)
	}

	req := kmsg.NewPtrTxnOffsetCommitRequest()
	req.TransactionalID = b.cfg.txnID
	req.Group = s.groupID
	req.ProducerID = id
	req.ProducerEpoch = epoch
	req.MemberID, req.Generation = s.cl.GroupMetadata()
	byTopic := map[string]int{}
	for _, pc := range g.parts {
		i, ok := byTopic[pc.p.topic]
		if !ok {
			t := kmsg.NewTxnOffsetCommitRequestTopic()
			t.Topic = pc.p.topic
			if v, ok := b.topics.Load(pc.p.topic); ok {
				t.TopicID = v.(*topicInfo).id
			}
			req.Topics = append(req.Topics, t)
			i = len(req.Topics) - 1
			byTopic[pc.p.topic] = i
		}
		p := kmsg.NewTxnOffsetCommitRequestTopicPartition()
		p.Partition = pc.p.partition
		p.Offset = pc.off
		p.LeaderEpoch = -1
		meta := pc.meta
		p.Metadata = &meta
		req.Topics[i].Partitions = append(req.Topics[i].Partitions, p)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("kafka: transactional offset commit for group %q: %w", s.groupID, err)
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				if errors.Is(err, kerr.IllegalGeneration) || errors.Is(err, kerr.UnknownMemberID) || errors.Is(err, kerr.FencedInstanceID) {
					err = fmt.Errorf("%w: %w", ErrPartitionRevoked, err)
				}
				return fmt.Errorf("kafka: transactional offset commit for group %q partition %d: %w", s.groupID, p.Partition, err)
			}
		}
	}
	return nil
}
