package kafka

import (
	"sync"
	"sync/atomic"
	"time"
)

// clockTick is the resolution of the subscriptions' clock.
const clockTick = 5 * time.Millisecond

// coarseClock is a clock read with one atomic load, for the per-delivery
// ack-wait bookkeeping: reading the system clock costs more than the rest
// of a hand-out on some machines. A ticker refreshes it while at least one
// subscription uses it. Ack-wait deadlines add one tick, so a delivery is
// never redelivered early, at most a tick late.
type coarseClock struct {
	now atomic.Int64 // Unix nanoseconds

	mu   sync.Mutex
	refs int
	stop chan struct{}
	done chan struct{}
}

func (c *coarseClock) acquire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refs++
	if c.refs > 1 {
		return
	}
	c.now.Store(time.Now().UnixNano())
	c.stop, c.done = make(chan struct{}), make(chan struct{})
	go c.run(c.stop, c.done)
}

func (c *coarseClock) release() {
	c.mu.Lock()
	c.refs--
	var stop, done chan struct{}
	if c.refs == 0 {
		stop, done = c.stop, c.done
	}
	c.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}

func (c *coarseClock) run(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(clockTick)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			c.now.Store(now.UnixNano())
		}
	}
}

// Now returns the time as of the last tick.
func (c *coarseClock) Now() time.Time { return time.Unix(0, c.now.Load()) }
