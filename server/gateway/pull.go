package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
)

// Bounds of a pull request.
const (
	// MaxPull is the most events one pull returns.
	MaxPull = 1000
	// MaxWait is the longest a pull waits for a first event.
	MaxWait = 30 * time.Second
)

// PullResponse is the answer to a pull: leased events, oldest first.
type PullResponse struct {
	Events []Leased `json:"events"`
}

// Leased is one pulled event. It must be acked (or nacked) with its lease
// before the lease expires, or it is delivered again.
type Leased struct {
	// Lease settles the event: POST it to .../ack or .../nack.
	Lease string `json:"lease"`
	// Expires is when the lease ends.
	Expires time.Time `json:"expires"`
	// Attempt is 1 on the first delivery and grows with each redelivery.
	Attempt int `json:"attempt"`
	// Sequence is the event's position in its topic.
	Sequence uint64 `json:"sequence"`
	// Event is the event in structured mode (application/cloudevents+json).
	Event json.RawMessage `json:"event"`
}

// SettleRequest is the body of an ack or nack.
type SettleRequest struct {
	// Leases to settle.
	Leases []string `json:"leases"`
	// Delay, for a nack, is how long to wait before the redelivery.
	Delay Duration `json:"delay,omitempty"`
}

// SettleResponse says what became of the leases of a SettleRequest.
type SettleResponse struct {
	// Settled counts the leases settled.
	Settled int `json:"settled"`
	// Unknown lists leases that expired (their events are delivered
	// again) or never existed.
	Unknown []string `json:"unknown,omitempty"`
}

// puller serves one pull subscription: its broker subscription and the
// leases handed out.
type puller struct {
	g   *Gateway
	sub Subscription
	bs  broker.Subscription
	dl  consumer.Middleware

	mu     sync.Mutex
	leases map[string]*lease
	reads  sync.Mutex // one pull at a time takes from the subscription
	stopCh chan struct{}
	done   chan struct{}
}

type lease struct {
	d       broker.Delivery
	expires time.Time
}

func (g *Gateway) startPull(ctx context.Context, s Subscription) (*puller, error) {
	start, err := broker.ParseStart(s.Start)
	if err != nil {
		return nil, err
	}
	bs, err := g.c.Broker().Subscribe(ctx, s.Topic, broker.SubscribeOptions{
		Group: s.Group, Start: start, AckWait: time.Duration(s.Lease) + time.Minute, MaxInFlight: 4 * MaxPull,
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: pull subscription %q: %w", s.Group, err)
	}
	p := &puller{g: g, sub: s, bs: bs, dl: consumer.DeadLetter(g.c.Broker(), nil),
		leases: map[string]*lease{}, stopCh: make(chan struct{}), done: make(chan struct{})}
	go p.expire()
	return p, nil
}

// expire hands events whose lease ended back to the group.
func (p *puller) expire() {
	defer close(p.done)
	tick := time.NewTicker(min(time.Duration(p.sub.Lease)/4, time.Second))
	defer tick.Stop()
	for {
		select {
		case <-p.stopCh:
			return
		case now := <-tick.C:
			var due []broker.Delivery
			p.mu.Lock()
			for id, l := range p.leases {
				if now.After(l.expires) {
					due = append(due, l.d)
					delete(p.leases, id)
				}
			}
			p.mu.Unlock()
			for _, d := range due {
				_ = d.Nack(context.Background(), 0)
			}
		}
	}
}

// stop closes the subscription; leased events go back to the group.
func (p *puller) stop() {
	close(p.stopCh)
	<-p.done
	p.mu.Lock()
	leases := p.leases
	p.leases = map[string]*lease{}
	p.mu.Unlock()
	for _, l := range leases {
		_ = l.d.Nack(context.Background(), 0)
	}
	_ = p.bs.Close()
}

func newLeaseID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// pull returns up to max events, waiting up to wait for the first.
func (p *puller) pull(ctx context.Context, maxN int, wait time.Duration) ([]Leased, error) {
	p.reads.Lock()
	defer p.reads.Unlock()
	out := make([]Leased, 0, min(maxN, 64))
	first, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for len(out) < maxN {
		var d broker.Delivery
		var err error
		if len(out) == 0 {
			d, err = p.bs.Next(first)
		} else {
			// Take what is buffered without waiting again.
			nctx, c := context.WithTimeout(ctx, 2*time.Millisecond)
			d, err = p.bs.Next(nctx)
			c()
		}
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				break
			}
			if len(out) > 0 {
				break
			}
			return nil, err
		}
		l, ok := p.lease(ctx, d)
		if ok {
			out = append(out, l)
		}
	}
	return out, nil
}

// lease records d under a new lease, or dead-letters it when it cannot
// be decoded or was delivered MaxAttempts times without an ack.
func (p *puller) lease(ctx context.Context, d broker.Delivery) (Leased, bool) {
	raw := d.Message()
	e, err := p.g.c.Binding().Decode(raw.Header, raw.Data)
	var body []byte
	if err == nil {
		body, err = event.MarshalJSON(e)
	}
	switch {
	case err != nil:
		p.deadLetter(ctx, d, e, fmt.Errorf("poison message: %w", err))
		return Leased{}, false
	case d.Attempt() > p.sub.MaxAttempts:
		p.deadLetter(ctx, d, e, fmt.Errorf("%w: pulled %d times without an ack", consumer.ErrRetriesExhausted, d.Attempt()-1))
		return Leased{}, false
	}
	id := newLeaseID()
	exp := time.Now().Add(time.Duration(p.sub.Lease))
	p.mu.Lock()
	p.leases[id] = &lease{d: d, expires: exp}
	p.mu.Unlock()
	return Leased{Lease: id, Expires: exp.UTC(), Attempt: d.Attempt(), Sequence: d.Sequence(), Event: body}, true
}

// deadLetter moves d to the dead-letter topic with the same context the
// SDK's consumers record, then acks it; if that fails it is redelivered.
func (p *puller) deadLetter(ctx context.Context, d broker.Delivery, e *event.Event, cause error) {
	m := &consumer.Message{Event: e, Topic: p.sub.Topic, Group: p.sub.Group, Attempt: d.Attempt(),
		Sequence: d.Sequence(), Stored: d.Timestamp(), Raw: d.Message(), Mode: consumer.AtLeastOnce}
	if e != nil {
		m.Handler = e.Type
	} else {
		m.DecodeErr = cause
	}
	err := p.dl(func(context.Context, *consumer.Message) error { return consumer.Permanent(cause) })(ctx, m)
	if err != nil {
		p.g.log.Warn("gateway: dead letter failed; redelivering", "group", p.sub.Group, "topic", p.sub.Topic, "error", err)
		_ = d.Nack(ctx, 5*time.Second)
		return
	}
	_ = d.Ack(ctx)
}

// settle acks (nack false) or nacks the leases.
func (p *puller) settle(ctx context.Context, ids []string, nack bool, delay time.Duration) (SettleResponse, error) {
	var res SettleResponse
	var errs []error
	for _, id := range ids {
		p.mu.Lock()
		l, ok := p.leases[id]
		delete(p.leases, id)
		p.mu.Unlock()
		if !ok {
			res.Unknown = append(res.Unknown, id)
			continue
		}
		var err error
		if nack {
			err = l.d.Nack(ctx, delay)
		} else {
			err = l.d.Ack(ctx)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("lease %s: %w", id, err))
			continue
		}
		res.Settled++
	}
	return res, errors.Join(errs...)
}

// pullHandler serves GET /v1/groups/{group}/events?max=N&wait=S.
func (g *Gateway) pullHandler(w http.ResponseWriter, r *http.Request) {
	p, ok := g.puller(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	maxN, wait := 1, time.Duration(0)
	if v := q.Get("max"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxPull {
			writeProblem(w, http.StatusBadRequest, fmt.Sprintf("max=%q: want 1 to %d", v, MaxPull))
			return
		}
		maxN = n
	}
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			if n, nerr := strconv.Atoi(v); nerr == nil {
				d, err = time.Duration(n)*time.Second, nil
			}
		}
		if err != nil || d < 0 || d > MaxWait {
			writeProblem(w, http.StatusBadRequest, fmt.Sprintf("wait=%q: want seconds (or a duration such as 500ms) up to %v", v, MaxWait))
			return
		}
		wait = d
	}
	wait = max(wait, 10*time.Millisecond)
	events, err := p.pull(r.Context(), maxN, wait)
	if err != nil {
		if r.Context().Err() != nil {
			return
		}
		writeProblem(w, http.StatusServiceUnavailable, fmt.Sprintf("group %q: %v", p.sub.Group, err))
		return
	}
	writeJSON(w, http.StatusOK, PullResponse{Events: events})
}

// settleHandler serves POST /v1/groups/{group}/ack and .../nack.
func (g *Gateway) settleHandler(nack bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, ok := g.puller(w, r)
		if !ok {
			return
		}
		var req SettleRequest
		if !g.decodeJSON(w, r, &req) {
			return
		}
		if len(req.Leases) == 0 {
			writeProblem(w, http.StatusBadRequest, `no leases: send {"leases": ["..."]}`)
			return
		}
		if len(req.Leases) > MaxPull {
			writeProblem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("%d leases: at most %d per request", len(req.Leases), MaxPull))
			return
		}
		if req.Delay < 0 || time.Duration(req.Delay) > maxLease {
			writeProblem(w, http.StatusBadRequest, fmt.Sprintf("delay %v: want 0 to %v", time.Duration(req.Delay), maxLease))
			return
		}
		res, err := p.settle(r.Context(), req.Leases, nack, time.Duration(req.Delay))
		if err != nil {
			writeProblem(w, http.StatusServiceUnavailable, fmt.Sprintf("settled %d; the broker refused the others (their leases are gone; they are delivered again): %v", res.Settled, err))
			return
		}
		writeJSON(w, http.StatusOK, res)
	}
}

// puller returns the pull subscription of the request's group, or answers
// 404 (unknown group) or 409 (a push subscription).
func (g *Gateway) puller(w http.ResponseWriter, r *http.Request) (*puller, bool) {
	group := r.PathValue("group")
	g.mu.Lock()
	run, ok := g.running[group]
	g.mu.Unlock()
	switch {
	case !ok:
		writeProblem(w, http.StatusNotFound, fmt.Sprintf("group %q has no subscription: create one with herald subscribe --group %s --topic TOPIC --pull", group, group))
		return nil, false
	case run.pull == nil && run.sub.Push != "":
		writeProblem(w, http.StatusConflict, fmt.Sprintf("group %q is a push subscription (to %s): its events are not pulled", group, run.sub.Push))
		return nil, false
	case run.pull == nil:
		writeProblem(w, http.StatusServiceUnavailable, fmt.Sprintf("group %q is not running: %v", group, run.err))
		return nil, false
	}
	return run.pull, true
}
