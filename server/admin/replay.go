package admin

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
)

// Settings natsjs gives the consumers of a group, mirrored for groups
// created by ReplayInto; a router joining the group applies its own.
const (
	membersBucket = "herald_members"
	priorityGroup = "herald"
	pullExpiry    = 2 * time.Second
	// resumeAfter is how long after a move a group stays paused.
	resumeAfter = 100 * time.Millisecond
)

// ReplayResult says where a group was moved.
type ReplayResult struct {
	Group  string        `json:"group"`
	Topics []ReplayTopic `json:"topics"`
}

// ReplayTopic is the group's new position on one topic.
type ReplayTopic struct {
	Topic string `json:"topic"`
	// Seq is the first topic sequence the group receives next.
	Seq uint64 `json:"seq"`
	// Consumers is how many JetStream consumers make up the group on the
	// topic (one per partition for a key-ordered group).
	Consumers int `json:"consumers"`
	// Recreated says the consumers were recreated rather than reset (their
	// start policy forbade moving them below their start; see Rewind).
	Recreated bool `json:"recreated,omitempty"`
}

// groupPart is a group's consumers on one topic.
type groupPart struct {
	ts   topicStream
	st   jetstream.Stream
	cons []*jetstream.ConsumerInfo
	seq  uint64
	// recreate lists consumers that cannot be reset to seq.
	recreate map[string]bool
}

var partitionSuffix = regexp.MustCompile(`^_p[0-9]+$`)

// inGroup reports whether consumer ci belongs to group.
func inGroup(ci *jetstream.ConsumerInfo, group string) bool {
	if g, ok := ci.Config.Metadata[metaGroup]; ok {
		return g == group
	}
	// Consumers created before natsjs wrote metadata: match by name.
	rest, ok := strings.CutPrefix(ci.Name, natsjs.ConsumerName(group))
	return ok && (rest == "" || partitionSuffix.MatchString(rest))
}

// groupParts finds group's consumers on topic, or on every topic when
// topic is empty.
func (s *Service) groupParts(ctx context.Context, group, topic string) ([]*groupPart, error) {
	var tss []topicStream
	if topic != "" {
		ts, _, err := s.topic(ctx, topic)
		if err != nil {
			return nil, err
		}
		tss = []topicStream{ts}
	} else {
		var err error
		if tss, err = s.topics(ctx); err != nil {
			return nil, err
		}
	}
	var parts []*groupPart
	for _, ts := range tss {
		p, err := s.groupPart(ctx, ts, group)
		if err != nil {
			if topic == "" && streamGone(err) {
				continue // deleted since it was listed
			}
			return nil, err
		}
		if len(p.cons) > 0 {
			parts = append(parts, p)
		}
	}
	return parts, nil
}

// groupPart reads the consumers group has on one topic.
func (s *Service) groupPart(ctx context.Context, ts topicStream, group string) (*groupPart, error) {
	st, err := s.js.Stream(ctx, ts.stream)
	if err != nil {
		return nil, fmt.Errorf("admin: topic %q: %w", ts.topic, err)
	}
	p := &groupPart{ts: ts, st: st}
	l := st.ListConsumers(ctx)
	for ci := range l.Info() {
		if inGroup(ci, group) {
			p.cons = append(p.cons, ci)
		}
	}
	if err := l.Err(); err != nil {
		return nil, fmt.Errorf("admin: topic %q: list consumers: %w", ts.topic, err)
	}
	slices.SortFunc(p.cons, func(a, b *jetstream.ConsumerInfo) int { return strings.Compare(a.Name, b.Name) })
	return p, nil
}

// startSeq resolves start to the first sequence of st to deliver.
func (s *Service) startSeq(ctx context.Context, st jetstream.Stream, start broker.Start) (uint64, error) {
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	state := info.State
	switch start.Kind {
	case broker.StartFirst:
		return max(state.FirstSeq, 1), nil
	case broker.StartNew:
		return state.LastSeq + 1, nil
	case broker.StartSequence:
		if start.Seq > state.LastSeq+1 {
			return 0, fmt.Errorf("%w: seq:%d is past the end of the topic (last sequence %d)", ErrInvalid, start.Seq, state.LastSeq)
		}
		return max(start.Seq, state.FirstSeq, 1), nil
	case broker.StartTime:
		if start.Time.After(s.now().Add(time.Minute)) {
			return 0, fmt.Errorf("%w: time %s is in the future", ErrInvalid, start.Time.Format(time.RFC3339))
		}
		return s.seqForTime(ctx, st, start.Time)
	}
	return 0, fmt.Errorf("%w: unknown start %v", ErrInvalid, start)
}

// resettable reports whether JetStream lets ci be reset to seq: consumers
// that deliver all messages always, those created at a sequence or a time
// only at or above it, those created to deliver new messages never.
func (s *Service) resettable(ctx context.Context, st jetstream.Stream, ci *jetstream.ConsumerInfo, seq uint64) (bool, error) {
	switch ci.Config.DeliverPolicy {
	case jetstream.DeliverAllPolicy:
		return true, nil
	case jetstream.DeliverByStartSequencePolicy:
		return seq >= ci.Config.OptStartSeq, nil
	case jetstream.DeliverByStartTimePolicy:
		if ci.Config.OptStartTime == nil {
			return false, nil
		}
		from, err := s.seqForTime(ctx, st, *ci.Config.OptStartTime)
		if err != nil {
			return false, err
		}
		return seq >= from, nil
	}
	return false, nil
}

// liveMembers returns why group seems to have running members on p's
// topic, or "" when it has none: a member's pull requests are waiting, a
// partition is pinned to a client, or a key-ordered member heartbeats.
func (s *Service) liveMembers(ctx context.Context, p *groupPart, group string) (string, error) {
	for _, ci := range p.cons {
		fresh, err := p.st.Consumer(ctx, ci.Name)
		if err != nil {
			return "", fmt.Errorf("consumer %q: %w", ci.Name, err)
		}
		info := fresh.CachedInfo()
		if info.NumWaiting > 0 {
			return fmt.Sprintf("consumer %q has %d pull requests waiting", ci.Name, info.NumWaiting), nil
		}
		for _, pg := range info.PriorityGroups {
			if pg.PinnedClientID != "" {
				return fmt.Sprintf("consumer %q is pinned to a client", ci.Name), nil
			}
		}
	}
	kv, err := s.js.KeyValue(ctx, membersBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("members bucket: %w", err)
	}
	lister, err := kv.ListKeysFiltered(ctx, p.ts.stream+"."+natsjs.ConsumerName(group)+".>")
	if err != nil {
		return "", fmt.Errorf("members bucket: %w", err)
	}
	var members []string
	for k := range lister.Keys() {
		members = append(members, k)
	}
	_ = lister.Stop()
	if len(members) > 0 {
		return fmt.Sprintf("%d members heartbeat in %s", len(members), membersBucket), nil
	}
	return "", nil
}

// Rewind moves group back (or forward) to `to` on topic, or on every topic
// the group consumes when topic is empty, keeping the group's consumers:
// its members keep running and receive the messages from the new position.
// The group is paused while it moves (JetStream consumer pause), so no
// member receives a message of the old position in between; deliveries
// in flight at that moment are redelivered from the new position (acks of
// them are ignored).
//
// JetStream resets a consumer only to a position at or above the one it
// was created with. A group created to start at new messages (the
// router's default) is rewound below its start by recreating its
// consumers (delivering all, reset to the position), which running
// members would not survive: Rewind then returns an error wrapping
// ErrConflict until the group's members are stopped. Recreated groups can
// be rewound anywhere afterwards, while running.
func (s *Service) Rewind(ctx context.Context, group, topic string, to broker.Start) (*ReplayResult, error) {
	if err := broker.ValidateName("group", group); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if topic != "" {
		if err := broker.ValidateName("topic", topic); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	if s.ev != nil {
		return s.ev.rewind(ctx, group, topic, to)
	}
	parts, err := s.groupParts(ctx, group, topic)
	if err != nil {
		return nil, err
	}
	if len(parts) == 0 {
		where := "any topic"
		if topic != "" {
			where = fmt.Sprintf("topic %q", topic)
		}
		return nil, fmt.Errorf("admin: group %q has no consumers on %s: %w", group, where, ErrNotFound)
	}
	// Plan every topic before touching any.
	for _, p := range parts {
		if p.seq, err = s.startSeq(ctx, p.st, to); err != nil {
			return nil, fmt.Errorf("admin: rewind group %q on topic %q: %w", group, p.ts.topic, err)
		}
		p.recreate = map[string]bool{}
		for _, ci := range p.cons {
			ok, err := s.resettable(ctx, p.st, ci, p.seq)
			if err != nil {
				return nil, fmt.Errorf("admin: rewind group %q on topic %q: %w", group, p.ts.topic, err)
			}
			if !ok {
				p.recreate[ci.Name] = true
			}
		}
		if len(p.recreate) == 0 {
			continue
		}
		why, err := s.liveMembers(ctx, p, group)
		if err != nil {
			return nil, fmt.Errorf("admin: rewind group %q on topic %q: %w", group, p.ts.topic, err)
		}
		if why != "" {
			return nil, fmt.Errorf("admin: rewind group %q on topic %q to %s: %w: the group was created to start at %s, "+
				"and JetStream moves such a group below its start only by recreating its consumers, which running members "+
				"would not survive; stop the group's members and run the rewind again (%s; pull requests of stopped members expire within 30s)",
				group, p.ts.topic, to, ErrConflict, startOf(p.cons[0]), why)
		}
	}
	res := &ReplayResult{Group: group}
	for _, p := range parts {
		if err := s.move(ctx, p); err != nil {
			return nil, fmt.Errorf("admin: rewind group %q on topic %q: %w", group, p.ts.topic, err)
		}
		res.Topics = append(res.Topics, ReplayTopic{Topic: p.ts.topic, Seq: p.seq, Consumers: len(p.cons), Recreated: len(p.recreate) > 0})
		s.log.Info("group rewound", "group", group, "topic", p.ts.topic, "to", to.String(), "seq", p.seq, "recreated", len(p.recreate) > 0)
	}
	return res, nil
}

func startOf(ci *jetstream.ConsumerInfo) string {
	switch ci.Config.DeliverPolicy {
	case jetstream.DeliverByStartSequencePolicy:
		return fmt.Sprintf("sequence %d", ci.Config.OptStartSeq)
	case jetstream.DeliverByStartTimePolicy:
		if ci.Config.OptStartTime != nil {
			return ci.Config.OptStartTime.Format(time.RFC3339)
		}
	}
	return "new messages"
}

// move pauses p's consumers, resets (or recreates) each to p.seq and
// resumes them, restoring a pause an operator had set.
func (s *Service) move(ctx context.Context, p *groupPart) (err error) {
	until := s.now().Add(s.pauseBound)
	paused := map[string]*time.Time{} // consumers paused here -> the pause to restore
	defer func() {
		// Always lift our pause, even when the move failed half-way.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		for name, prev := range paused {
			// A consumer resumed by clearing its pause does not wake the
			// pull requests waiting on it (nats-server 2.15); one whose
			// pause runs out does. So the pause is shortened to
			// resumeAfter rather than cleared.
			until := s.now().Add(resumeAfter)
			if prev != nil && prev.After(until) {
				until = *prev
			}
			_, rerr := p.st.PauseConsumer(rctx, name, until)
			if rerr != nil {
				err = errors.Join(err, fmt.Errorf("resume consumer %q: %w", name, rerr))
			}
		}
	}()
	for _, ci := range p.cons {
		if _, err := p.st.PauseConsumer(ctx, ci.Name, until); err != nil {
			return fmt.Errorf("pause consumer %q: %w", ci.Name, err)
		}
		var prev *time.Time
		if ci.Paused && ci.Config.PauseUntil != nil {
			prev = ci.Config.PauseUntil
		}
		paused[ci.Name] = prev
	}
	for _, ci := range p.cons {
		if p.recreate[ci.Name] {
			if err := s.recreate(ctx, p.st, ci, until); err != nil {
				return err
			}
		}
		if _, err := p.st.ResetConsumerToSequence(ctx, ci.Name, p.seq); err != nil {
			return fmt.Errorf("reset consumer %q to sequence %d: %w", ci.Name, p.seq, err)
		}
	}
	return nil
}

// recreate replaces ci by a paused consumer with the same settings that
// delivers all messages, so it can be reset to any position.
func (s *Service) recreate(ctx context.Context, st jetstream.Stream, ci *jetstream.ConsumerInfo, pauseUntil time.Time) error {
	cfg := ci.Config
	cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = jetstream.DeliverAllPolicy, 0, nil
	cfg.PauseUntil = &pauseUntil
	cfg.Metadata = maps.Clone(cfg.Metadata)
	maps.DeleteFunc(cfg.Metadata, func(k, _ string) bool { return strings.HasPrefix(k, "_nats.") })
	if err := st.DeleteConsumer(ctx, ci.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("recreate consumer %q: delete: %w", ci.Name, err)
	}
	if _, err := st.CreateConsumer(ctx, cfg); err != nil {
		return fmt.Errorf("recreate consumer %q: create: %w (the group lost its position; replay it with --into-group or create it again)", ci.Name, err)
	}
	return nil
}

// ReplayIntoRequest creates a new group positioned in a topic's history.
type ReplayIntoRequest struct {
	// Topic to replay and From where; Group is the new group.
	Topic string
	From  broker.Start
	Group string
	// KeyOrder creates the group key-ordered (one consumer per partition),
	// as the router does by default; false creates a plain work-queue
	// group. It must match how the group's router subscribes.
	KeyOrder bool
	// AckWait and MaxInFlight are the group's initial settings; a router
	// joining the group applies its own. Defaults 30s and 1024.
	AckWait     time.Duration
	MaxInFlight int
}

// ReplayInto creates group on topic, positioned at From, without touching
// any other group: services that then run a router for the group receive
// the topic's events from there. It returns an error wrapping ErrConflict
// when the group already has consumers on the topic.
func (s *Service) ReplayInto(ctx context.Context, req ReplayIntoRequest) (*ReplayResult, error) {
	if err := broker.ValidateName("group", req.Group); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := broker.ValidateName("topic", req.Topic); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if req.AckWait < 0 || req.MaxInFlight < 0 {
		return nil, fmt.Errorf("%w: ack wait and max in flight must not be negative", ErrInvalid)
	}
	if req.AckWait == 0 {
		req.AckWait = broker.DefaultAckWait
	}
	if req.MaxInFlight == 0 {
		req.MaxInFlight = broker.DefaultMaxInFlight
	}
	if s.ev != nil {
		return s.ev.replayInto(ctx, req)
	}
	parts, err := s.groupParts(ctx, req.Group, req.Topic)
	if err != nil {
		return nil, err
	}
	if len(parts) > 0 {
		return nil, fmt.Errorf("admin: replay into group %q: %w: the group already exists on topic %q; "+
			"rewind it with `herald replay --group %s --to ...`, or choose a new name", req.Group, ErrConflict, req.Topic, req.Group)
	}
	ts, st, err := s.topic(ctx, req.Topic)
	if err != nil {
		return nil, err
	}
	seq, err := s.startSeq(ctx, st, req.From)
	if err != nil {
		return nil, fmt.Errorf("admin: replay topic %q into group %q: %w", req.Topic, req.Group, err)
	}
	until := s.now().Add(s.pauseBound)
	var cfgs []jetstream.ConsumerConfig
	base := jetstream.ConsumerConfig{
		Description:   "Herald group " + req.Group,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       req.AckWait,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		PauseUntil:    &until,
		Metadata:      map[string]string{metaGroup: req.Group},
	}
	if req.KeyOrder {
		per := max(req.MaxInFlight/ts.partitions, 16)
		for p := range ts.partitions {
			c := base
			c.Durable = natsjs.PartitionConsumerName(req.Group, p)
			c.FilterSubject = fmt.Sprintf("%s.%d.>", ts.stream, p)
			c.MaxAckPending = per
			c.PriorityPolicy = jetstream.PriorityPolicyPinned
			c.PriorityGroups = []string{priorityGroup}
			c.PinnedTTL = req.AckWait + pullExpiry + time.Second
			cfgs = append(cfgs, c)
		}
	} else {
		c := base
		c.Durable = natsjs.ConsumerName(req.Group)
		c.FilterSubject = ts.stream + ".>"
		c.MaxAckPending = req.MaxInFlight
		cfgs = append(cfgs, c)
	}
	var created []string
	fail := func(err error) (*ReplayResult, error) {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		for _, name := range created {
			_ = st.DeleteConsumer(dctx, name)
		}
		return nil, fmt.Errorf("admin: replay topic %q into group %q: %w", req.Topic, req.Group, err)
	}
	for _, c := range cfgs {
		if _, err := st.CreateConsumer(ctx, c); err != nil {
			if errors.Is(err, jetstream.ErrConsumerExists) {
				err = fmt.Errorf("%w: consumer %q appeared meanwhile", ErrConflict, c.Durable)
			}
			return fail(err)
		}
		created = append(created, c.Durable)
		if _, err := st.ResetConsumerToSequence(ctx, c.Durable, seq); err != nil {
			return fail(fmt.Errorf("position consumer %q at sequence %d: %w", c.Durable, seq, err))
		}
	}
	for _, name := range created {
		if _, err := st.ResumeConsumer(ctx, name); err != nil {
			return fail(fmt.Errorf("resume consumer %q: %w", name, err))
		}
	}
	s.log.Info("group created for replay", "group", req.Group, "topic", req.Topic, "from", req.From.String(), "seq", seq, "key_order", req.KeyOrder)
	return &ReplayResult{Group: req.Group, Topics: []ReplayTopic{{Topic: req.Topic, Seq: seq, Consumers: len(created)}}}, nil
}
