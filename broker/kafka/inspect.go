package kafka

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/broker"
)

var _ broker.Inspector = (*Broker)(nil)

// TopicStates implements broker.Inspector: every topic of the cluster but
// Kafka's internal ones and Herald's retry topics, with its record count
// (end minus start offsets) and retention.
func (b *Broker) TopicStates(ctx context.Context) ([]broker.TopicState, error) {
	tds, err := b.adm.ListTopics(ctx)
	if err != nil {
		return nil, fmt.Errorf("kafka: list topics: %w: %w", broker.ErrUnavailable, err)
	}
	var names []string
	for name, td := range tds {
		if td.IsInternal || td.Err != nil || strings.HasPrefix(name, "__") || isRetryTopic(name, tds) {
			continue
		}
		names = append(names, name)
	}
	slices.Sort(names)
	if len(names) == 0 {
		return []broker.TopicState{}, nil
	}
	starts, ends, err := b.bounds(ctx, names...)
	if err != nil {
		return nil, err
	}
	cfgs, err := b.adm.DescribeTopicConfigs(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("kafka: describe topic configs: %w: %w", broker.ErrUnavailable, err)
	}
	out := make([]broker.TopicState, 0, len(names))
	for _, name := range names {
		st := broker.TopicState{Topic: name, Partitions: len(tds[name].Partitions)}
		for p := range tds[name].Partitions {
			s, _ := starts.Lookup(name, p)
			e, _ := ends.Lookup(name, p)
			if e.Offset > s.Offset && s.Offset >= 0 {
				st.Messages += uint64(e.Offset - s.Offset)
				if st.Partitions == 1 {
					st.FirstSeq, st.LastSeq = uint64(s.Offset)+1, uint64(e.Offset)
				}
			}
		}
		if rc, err := cfgs.On(name, nil); err == nil {
			for _, c := range rc.Configs {
				if c.Value == nil {
					continue
				}
				n, err := strconv.ParseInt(*c.Value, 10, 64)
				if err != nil || n <= 0 {
					continue
				}
				switch c.Key {
				case "retention.ms":
					st.Retention.MaxAge = time.Duration(n) * time.Millisecond
				case "retention.bytes":
					st.Retention.MaxBytes = n * int64(st.Partitions)
				}
			}
		}
		out = append(out, st)
	}
	return out, nil
}

// isRetryTopic reports whether name is RetryTopic(t, g) of a topic t of
// tds.
func isRetryTopic(name string, tds kadm.TopicDetails) bool {
	for i := strings.Index(name, ".retry."); i > 0; {
		if _, ok := tds[name[:i]]; ok {
			return true
		}
		j := strings.Index(name[i+1:], ".retry.")
		if j < 0 {
			return false
		}
		i += 1 + j
	}
	return false
}

// bounds lists the start and end offsets of topics.
func (b *Broker) bounds(ctx context.Context, topics ...string) (starts, ends kadm.ListedOffsets, err error) {
	starts, err = b.adm.ListStartOffsets(ctx, topics...)
	if err == nil {
		err = starts.Error()
	}
	if err == nil {
		ends, err = b.adm.ListEndOffsets(ctx, topics...)
	}
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("kafka: list offsets of %v: %w: %w", topics, broker.ErrUnavailable, err)
	}
	return starts, ends, nil
}

// GroupStates implements broker.Inspector. A Herald group (Kafka group
// GroupID(topic, group)) is reported under its Herald name, its retry
// topic's records counted as pending; any other Kafka group (kafka-python's
// "payment-service") is reported as Foreign, once per topic it committed
// offsets on. Kafka does not tell delivered from undelivered records:
// Pending is end minus committed offsets, InFlight 0.
func (b *Broker) GroupStates(ctx context.Context, topic string) ([]broker.GroupState, error) {
	listed, err := b.adm.ListGroups(ctx)
	if err != nil {
		return nil, fmt.Errorf("kafka: list groups: %w: %w", broker.ErrUnavailable, err)
	}
	ids := listed.Groups()
	if len(ids) == 0 {
		return []broker.GroupState{}, nil
	}
	lags, err := b.adm.Lag(ctx, ids...)
	if err != nil {
		return nil, fmt.Errorf("kafka: group lag: %w: %w", broker.ErrUnavailable, err)
	}
	var out []broker.GroupState
	for _, id := range ids {
		l, ok := lags[id]
		if !ok || l.Error() != nil {
			continue
		}
		htopic, hgroup, herald := strings.Cut(id, ":")
		if herald && (broker.ValidateName("topic", htopic) != nil || broker.ValidateName("group", hgroup) != nil) {
			herald = false
		}
		rows := map[string]*broker.GroupState{}
		for t, parts := range l.Lag {
			owner := t
			if herald && t == RetryTopic(htopic, hgroup) {
				owner = htopic
			}
			if topic != "" && owner != topic {
				continue
			}
			committed := false
			var pending uint64
			for _, pl := range parts {
				if pl.Commit.At >= 0 {
					committed = true
				}
				if pl.Lag > 0 {
					pending += uint64(pl.Lag)
				}
			}
			if !committed && t != htopic {
				continue
			}
			row := rows[owner]
			if row == nil {
				row = &broker.GroupState{Topic: owner, Group: id, Members: len(l.Members), Foreign: true}
				if herald && owner == htopic {
					row.Group, row.Foreign = hgroup, false
				}
				rows[owner] = row
			}
			row.Pending += pending
		}
		for _, r := range rows {
			out = append(out, *r)
		}
	}
	slices.SortFunc(out, func(a, b broker.GroupState) int {
		return strings.Compare(a.Topic+"\x00"+a.Group, b.Topic+"\x00"+b.Group)
	})
	if out == nil {
		out = []broker.GroupState{}
	}
	return out, nil
}

// ReadTopic implements broker.Inspector, partition after partition (the
// order of Sequence), with a client of its own that joins no group.
func (b *Broker) ReadTopic(ctx context.Context, topic string, after uint64, fn func(*broker.StoredMessage) bool) error {
	starts, ends, err := b.bounds(ctx, topic)
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		return fmt.Errorf("kafka: read topic %q: no such topic: %w", topic, broker.ErrInvalidTopic)
	}
	if err != nil {
		return err
	}
	var parts []int32
	ends.Each(func(o kadm.ListedOffset) {
		if o.Topic == topic {
			parts = append(parts, o.Partition)
		}
	})
	if len(parts) == 0 {
		return fmt.Errorf("kafka: read topic %q: %w", topic, broker.ErrInvalidTopic)
	}
	slices.Sort(parts)
	ap, aoff := int32(after>>48), int64(after&offsetMask) // aoff: the offset after the one of after
	for _, p := range parts {
		if after > 0 && p < ap {
			continue
		}
		s, _ := starts.Lookup(topic, p)
		e, _ := ends.Lookup(topic, p)
		from := s.Offset
		if after > 0 && p == ap {
			from = max(from, aoff)
		}
		if from >= e.Offset {
			continue
		}
		more, err := b.readPartition(ctx, topic, p, from, e.Offset, fn)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// readPartition calls fn with the records of partition p from offset from
// up to end (exclusive) and reports whether fn wants more.
func (b *Broker) readPartition(ctx context.Context, topic string, p int32, from, end int64, fn func(*broker.StoredMessage) bool) (bool, error) {
	cl, err := kgo.NewClient(append(b.cfg.baseOpts(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {p: kgo.NewOffset().At(from)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)...)
	if err != nil {
		return false, fmt.Errorf("kafka: read topic %q: %w: %w", topic, broker.ErrUnavailable, err)
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return false, err
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.Canceled) {
				ferr = err
			}
		})
		if ferr != nil {
			return false, fmt.Errorf("kafka: read topic %q partition %d: %w", topic, p, ferr)
		}
		last := int64(-1)
		for _, r := range fs.Records() {
			last = r.Offset
			if r.Offset >= end {
				return true, nil
			}
			seq := uint64(r.Partition)<<48 | uint64(r.Offset+1)
			sm := &broker.StoredMessage{Message: decodeMessage(r, topic), Seq: seq, Time: r.Timestamp}
			if sm.Route == "" {
				b.cfg.adopt(&sm.Message, seq, r.Timestamp)
			}
			if !fn(sm) {
				return false, nil
			}
		}
		// Aborted transactional records and control records leave gaps:
		// the end offset may not be reached by any record returned.
		if last >= end-1 {
			return true, nil
		}
		if last < 0 {
			if pos, err := b.adm.ListEndOffsets(ctx, topic); err == nil {
				if o, ok := pos.Lookup(topic, p); ok && o.Offset <= from {
					return true, nil
				}
			}
		} else {
			from = last + 1
		}
	}
}

// MoveGroup implements broker.Inspector by committing the group's offsets
// (on a topic of several partitions, every partition at the first record
// at or after to). Kafka accepts such a commit only from a group without
// members.
func (b *Broker) MoveGroup(ctx context.Context, topic, group string, to broker.Start, create bool) (uint64, error) {
	if err := broker.ValidateName("topic", topic); err != nil {
		return 0, err
	}
	if err := broker.ValidateName("group", group); err != nil {
		return 0, err
	}
	id := GroupID(topic, group)
	have, err := b.hasCommits(ctx, id, topic)
	if err != nil {
		return 0, err
	}
	switch {
	case create && have:
		return 0, fmt.Errorf("kafka: group %q of topic %q: %w", group, topic, broker.ErrGroupExists)
	case !create && !have:
		return 0, fmt.Errorf("kafka: group %q of topic %q: %w", group, topic, broker.ErrGroupNotFound)
	}
	dg, err := b.adm.DescribeGroups(ctx, id)
	if err != nil {
		return 0, fmt.Errorf("kafka: describe group %q: %w: %w", id, broker.ErrUnavailable, err)
	}
	if d, ok := dg[id]; ok && d.Err == nil && len(d.Members) > 0 {
		return 0, fmt.Errorf("kafka: group %q of topic %q has %d live members: %w", group, topic, len(d.Members), broker.ErrGroupBusy)
	}
	if _, err := b.ensureTopic(ctx, topic, nil); err != nil {
		return 0, err
	}
	offs, err := b.startOffsets(ctx, topic, to)
	if err != nil {
		return 0, fmt.Errorf("kafka: group %q: start %s: %w", id, to, err)
	}
	var seq uint64
	n := 0
	offs.Each(func(o kadm.Offset) {
		o.LeaderEpoch, o.Metadata = -1, ""
		offs.Add(o)
		n++
		seq = uint64(o.Partition)<<48 | uint64(o.At+1)
	})
	if n != 1 {
		seq = 0
	}
	resps, err := b.adm.CommitOffsets(ctx, id, offs)
	if err == nil {
		err = resps.Error()
	}
	if errors.Is(err, kerr.UnknownMemberID) || errors.Is(err, kerr.RebalanceInProgress) || errors.Is(err, kerr.IllegalGeneration) {
		return 0, fmt.Errorf("kafka: group %q of topic %q: %w: %w", group, topic, broker.ErrGroupBusy, err)
	}
	if err != nil {
		return 0, fmt.Errorf("kafka: group %q: commit %s: %w: %w", id, to, broker.ErrUnavailable, err)
	}
	b.cfg.logger.Info("group moved", "topic", topic, "group", group, "to", to.String(), "create", create)
	return seq, nil
}
