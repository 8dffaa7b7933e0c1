package gateway

import (
	"context"
	"errors"
	"sync"
	"time"
)

// running is a subscription this gateway serves.
type running struct {
	sub  Subscription
	push *pusher
	pull *puller
	err  error // why it does not run
}

func (r *running) stop() {
	if r.push != nil {
		r.push.stop()
	}
	if r.pull != nil {
		r.pull.stop()
	}
}

// Start serves the subscriptions of the store given WithStore (push
// deliveries run, pull groups answer) and follows its changes until
// Close. It returns once the existing subscriptions are running.
func (g *Gateway) Start(ctx context.Context) error {
	if g.cfg.store == nil {
		return nil
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ready := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	g.stopWatch = cancel
	g.watchDone = make(chan struct{})
	go func() {
		defer close(g.watchDone)
		err := g.cfg.store.watch(wctx, g.apply, func() { once.Do(func() { close(ready) }) })
		done <- err
	}()
	select {
	case <-ready:
		return nil
	case err := <-done:
		if err == nil {
			err = errors.New("gateway: subscriptions watch ended")
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// apply starts, restarts or stops the subscription of group (s nil:
// deleted).
func (g *Gateway) apply(group string, s *Subscription) {
	g.mu.Lock()
	old := g.running[group]
	delete(g.running, group)
	closed := g.closed
	g.mu.Unlock()
	if old != nil {
		old.stop()
	}
	if s == nil || closed {
		return
	}
	run := &running{sub: *s}
	sub, err := s.withDefaults()
	if err == nil {
		run.sub = sub
		if sub.Push != "" {
			run.push, err = g.startPush(sub)
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			run.pull, err = g.startPull(ctx, sub)
			cancel()
		}
	}
	if err != nil {
		run.err = err
		g.log.Error("gateway: subscription does not run", "group", group, "topic", s.Topic, "error", err)
	}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		run.stop()
		return
	}
	g.running[group] = run
	g.mu.Unlock()
}

// Close stops every subscription: push deliveries in flight finish
// (bounded by their timeout), leased pull events go back to their group.
func (g *Gateway) Close() error {
	if g.stopWatch != nil {
		g.stopWatch()
		<-g.watchDone
	}
	g.mu.Lock()
	g.closed = true
	runs := g.running
	g.running = map[string]*running{}
	g.mu.Unlock()
	var wg sync.WaitGroup
	for _, r := range runs {
		wg.Go(r.stop)
	}
	wg.Wait()
	return nil
}
