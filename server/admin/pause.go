package admin

import (
	"context"
	"fmt"
	"time"

	"github.com/heraldhq/herald/broker"
)

// PauseResult says which of a group's consumers a pause or resume moved.
type PauseResult struct {
	Group     string `json:"group"`
	Consumers int    `json:"consumers"`
	// Until is when the pause ends on its own; zero after a resume.
	Until time.Time `json:"until,omitzero"`
}

// Pause stops delivery to group (on topic, or on every topic when empty)
// until the given time: its members keep running and get nothing until
// then, or until Resume.
func (s *Service) Pause(ctx context.Context, group, topic string, until time.Time) (*PauseResult, error) {
	if s.ev != nil {
		return nil, s.ev.unsupported("pause a group")
	}
	if !until.After(s.now()) {
		return nil, fmt.Errorf("%w: pause group %q until %s: the time has passed", ErrInvalid, group, until.Format(time.RFC3339))
	}
	return s.setPause(ctx, group, topic, until, "paused")
}

// Resume lifts a pause of group (on topic, or on every topic when empty).
// Delivery starts again within a second.
func (s *Service) Resume(ctx context.Context, group, topic string) (*PauseResult, error) {
	if s.ev != nil {
		return nil, s.ev.unsupported("resume a group")
	}
	// A pause that runs out wakes waiting pull requests; one cleared
	// outright does not (see move), so the pause is shortened instead.
	res, err := s.setPause(ctx, group, topic, s.now().Add(resumeAfter), "resumed")
	if res != nil {
		res.Until = time.Time{}
	}
	return res, err
}

func (s *Service) setPause(ctx context.Context, group, topic string, until time.Time, what string) (*PauseResult, error) {
	if err := broker.ValidateName("group", group); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if topic != "" {
		if err := broker.ValidateName("topic", topic); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	parts, err := s.groupParts(ctx, group, topic)
	if err != nil {
		return nil, err
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("admin: group %q has no consumers: %w", group, ErrNotFound)
	}
	res := &PauseResult{Group: group, Until: until}
	for _, p := range parts {
		for _, ci := range p.cons {
			if _, err := p.st.PauseConsumer(ctx, ci.Name, until); err != nil {
				return res, fmt.Errorf("admin: group %q on topic %q: pause consumer %q: %w", group, p.ts.topic, ci.Name, err)
			}
			res.Consumers++
		}
	}
	s.log.Info("group "+what, "group", group, "topic", topic, "consumers", res.Consumers)
	return res, nil
}

// RewindPlan is what a rewind of a group on one topic would do.
type RewindPlan struct {
	Topic string `json:"topic"`
	// Seq is the sequence the group would restart from.
	Seq uint64 `json:"seq"`
	// Replays counts the sequences from Seq up to the furthest the group
	// has been delivered: the events it would see again (at most; messages
	// deleted in between count too).
	Replays uint64 `json:"replays"`
	// NeedsStop is set when the rewind recreates consumers, which needs
	// the group's members stopped first.
	NeedsStop bool `json:"needs_stop,omitempty"`
}

// RewindPreview plans a rewind of group (on topic, or every topic when
// empty) to the given start without changing anything.
func (s *Service) RewindPreview(ctx context.Context, group, topic string, to broker.Start) ([]RewindPlan, error) {
	if s.ev != nil {
		return nil, s.ev.unsupported("preview a rewind")
	}
	if err := broker.ValidateName("group", group); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	parts, err := s.groupParts(ctx, group, topic)
	if err != nil {
		return nil, err
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("admin: group %q has no consumers: %w", group, ErrNotFound)
	}
	out := make([]RewindPlan, 0, len(parts))
	for _, p := range parts {
		seq, err := s.startSeq(ctx, p.st, to)
		if err != nil {
			return nil, fmt.Errorf("admin: rewind group %q on topic %q: %w", group, p.ts.topic, err)
		}
		plan := RewindPlan{Topic: p.ts.topic, Seq: seq}
		var delivered uint64
		for _, ci := range p.cons {
			delivered = max(delivered, ci.Delivered.Stream)
			ok, err := s.resettable(ctx, p.st, ci, seq)
			if err != nil {
				return nil, fmt.Errorf("admin: rewind group %q on topic %q: %w", group, p.ts.topic, err)
			}
			plan.NeedsStop = plan.NeedsStop || !ok
		}
		if delivered >= seq {
			plan.Replays = delivered - seq + 1
		}
		out = append(out, plan)
	}
	return out, nil
}
