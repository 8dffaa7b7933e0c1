package admin

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/heraldhq/herald/consumer"
)

// breakerScan is how many of the newest breaker reports Breakers reads:
// every live instance reports at least once an interval.
const breakerScan = 1000

// breakerLive is how old an instance's last report may be for it to count
// as running.
const breakerLive = 3 * consumer.BreakerReportInterval

// GroupBreakers is what the routers of one group with a circuit breaker
// last reported (consumer.BreakerTopic).
type GroupBreakers struct {
	Group string `json:"group"`
	// Instances are the running instances' last reports, their State
	// half-open once an open breaker's period ended.
	Instances []consumer.BreakerReport `json:"instances"`
	Open      int                      `json:"open"`
	HalfOpen  int                      `json:"half_open"`
	Closed    int                      `json:"closed"`
}

// Breakers returns, by group, the circuit breakers that running routers
// reported in the last few report intervals. It returns none when no
// router reported yet.
func (s *Service) Breakers(ctx context.Context) ([]GroupBreakers, error) {
	msgs, _, err := s.Messages(ctx, consumer.BreakerTopic, 0, breakerScan)
	if errors.Is(err, ErrNotFound) {
		return []GroupBreakers{}, nil
	}
	if err != nil {
		return nil, err
	}
	now := time.Now()
	seen := map[string]bool{}
	by := map[string]*GroupBreakers{}
	for _, m := range msgs { // newest first
		if m.Type != consumer.BreakerReportType {
			continue
		}
		var rep consumer.BreakerReport
		if json.Unmarshal(m.Data, &rep) != nil || rep.Group == "" || rep.Instance == "" {
			continue
		}
		key := rep.Instance + "\x00" + rep.Group
		if seen[key] {
			continue // an older report of an instance already counted
		}
		seen[key] = true
		if rep.Stopped || now.Sub(rep.Reported) > breakerLive {
			continue
		}
		if rep.State == consumer.BreakerOpen.String() && !rep.OpenUntil.IsZero() && now.After(rep.OpenUntil) {
			rep.State = consumer.BreakerHalfOpen.String()
		}
		g := by[rep.Group]
		if g == nil {
			g = &GroupBreakers{Group: rep.Group}
			by[rep.Group] = g
		}
		g.Instances = append(g.Instances, rep)
		switch rep.State {
		case consumer.BreakerOpen.String():
			g.Open++
		case consumer.BreakerHalfOpen.String():
			g.HalfOpen++
		default:
			g.Closed++
		}
	}
	out := make([]GroupBreakers, 0, len(by))
	for _, g := range by {
		slices.SortFunc(g.Instances, func(a, b consumer.BreakerReport) int { return strings.Compare(a.Instance, b.Instance) })
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b GroupBreakers) int { return strings.Compare(a.Group, b.Group) })
	return out, nil
}
