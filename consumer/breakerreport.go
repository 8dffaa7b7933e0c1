package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/event"
)

// BreakerTopic is the topic routers with a circuit breaker report its
// state to (see WithBreaker); the dashboard's overview reads it. Reports
// are small and few: one on every change and one every
// BreakerReportInterval while the router runs.
const BreakerTopic = "herald.breakers"

// BreakerTopicConfig is the breaker topic's retention: an hour of reports
// (the overview reads the last minute of them).
var BreakerTopicConfig = broker.TopicConfig{MaxAge: time.Hour}

// BreakerReportType is the event type of a breaker report; its subject is
// the group.
const BreakerReportType = "herald.breaker.v1"

// BreakerReportInterval is how often a running router repeats its
// breaker's state. A report older than a few intervals is from an
// instance that is gone.
const BreakerReportInterval = 15 * time.Second

// BreakerReport is the data of a breaker report.
type BreakerReport struct {
	Group string `json:"group"`
	// Instance names the reporting process: host, process id and a
	// random suffix per router.
	Instance string `json:"instance"`
	// State is closed, open or half-open.
	State string `json:"state"`
	// Since is when the breaker entered State (zero: closed since start).
	Since time.Time `json:"since,omitzero"`
	// OpenUntil, for an open breaker, is when a probe may run: from then
	// on the breaker is half-open.
	OpenUntil time.Time `json:"open_until,omitzero"`
	// Reported is when the report was made.
	Reported time.Time `json:"reported"`
	// Stopped is set on the last report of a router that stopped.
	Stopped bool `json:"stopped,omitempty"`
}

// WithoutBreakerReports keeps the router from publishing its breaker's
// state to BreakerTopic.
func WithoutBreakerReports() Option {
	return func(c *config) error { c.noBreakerReports = true; return nil }
}

// reportBreaker publishes the breaker's state to BreakerTopic on every
// change and every BreakerReportInterval until ctx ends, then a last
// report saying the router stopped. Reports are best effort: a failed
// publish is logged and the next one tries again.
func (r *Router) reportBreaker(ctx context.Context, every time.Duration) {
	instance := reportInstance()
	warned := false
	send := func(rep BreakerReport, timeout time.Duration) {
		rep.Group, rep.Instance, rep.Reported = r.group, instance, time.Now().UTC()
		data, _ := json.Marshal(rep)
		e := event.New("herald/consumer", BreakerReportType, data)
		e.Subject = r.group
		e.DataContentType = "application/json"
		h := map[string]string{}
		event.NATS.Encode(e, h)
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		err := r.pub.Publish(pctx, &broker.Message{Topic: BreakerTopic, Route: BreakerReportType, Key: r.group, ID: e.ID, Header: h, Data: e.Data})
		switch {
		case err != nil && !warned:
			warned = true
			r.cfg.log.Warn("consumer: cannot report the circuit breaker's state (the dashboard will not show it)", "group", r.group, "topic", BreakerTopic, "error", err)
		case err != nil:
			r.cfg.log.Debug("consumer: report the circuit breaker's state", "group", r.group, "error", err)
		}
	}
	if tm, ok := r.pub.(broker.TopicManager); ok {
		// The server creates the topic too; a service that may not create
		// topics leaves it to the server.
		if err := tm.EnsureTopic(ctx, BreakerTopic, BreakerTopicConfig); err != nil {
			r.cfg.log.Debug("consumer: ensure the breaker topic", "topic", BreakerTopic, "error", err)
		}
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		st, since, until, changed := r.breaker.snapshot()
		rep := BreakerReport{State: st.String()}
		if !since.IsZero() {
			rep.Since = since.UTC()
		}
		if st == BreakerOpen {
			rep.OpenUntil = until.UTC()
		}
		send(rep, 5*time.Second)
		select {
		case <-ctx.Done():
			// Bounded tighter: the router's shutdown waits for it.
			rep.Stopped = true
			send(rep, 2*time.Second)
			return
		case <-changed:
		case <-t.C:
		}
	}
}

func reportInstance() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "unknown"
	}
	id := event.NewID()
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), id[len(id)-8:]) // the random end of a UUIDv7
}
