//go:build fault

package fault

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/event"
)

// load publishes from 8 goroutines, 20-event calls of 64 keys, and records
// every event id whose call was confirmed. A failed call is retried with
// the same ids, so the server drops the copies of those it had stored.
type load struct {
	stopLoad context.CancelFunc
	wg       sync.WaitGroup
	fails    atomic.Int64
	lastErr  atomic.Pointer[string]

	mu      sync.Mutex
	acked   map[string]int64 // event id: when its call was confirmed, unix nanos
	lastAck time.Time
	// gap is the longest stretch without a confirmation since the last
	// resetGap.
	gap time.Duration
}

// startLoad starts publishing to topic; the test's cleanup stops it.
func startLoad(t *testing.T, c *herald.Client, topic string) *load {
	t.Helper()
	const workers, batch = 8, 20
	lctx, stop := context.WithCancel(t.Context())
	ld := &load{stopLoad: stop, acked: map[string]int64{}}
	t.Cleanup(ld.stop)
	for w := range workers {
		ld.wg.Go(func() {
			var evs []*event.Event
			for n := 0; lctx.Err() == nil; n++ {
				if evs == nil {
					evs = make([]*event.Event, batch)
					for i := range evs {
						evs[i] = event.New("fault", "fault.tick.v1", fmt.Appendf(nil, `{"w":%d,"n":%d}`, w, n*batch+i))
						evs[i].Subject = fmt.Sprintf("k%d", (n*batch+i)%64)
					}
				}
				pctx, cancel := context.WithTimeout(lctx, publishTimeout)
				err := c.PublishTo(pctx, topic, evs...)
				cancel()
				if err != nil {
					ld.fails.Add(1)
					msg := time.Now().Format("15:04:05.000 ") + err.Error()
					ld.lastErr.Store(&msg)
					select {
					case <-lctx.Done():
					case <-time.After(20 * time.Millisecond):
					}
					continue
				}
				now := time.Now()
				ld.mu.Lock()
				if !ld.lastAck.IsZero() {
					ld.gap = max(ld.gap, now.Sub(ld.lastAck))
				}
				ld.lastAck = now
				for _, e := range evs {
					ld.acked[e.ID] = now.UnixNano()
				}
				ld.mu.Unlock()
				evs = nil
			}
		})
	}
	return ld
}

// lastError is the newest publish error and when it happened, or "".
func (ld *load) lastError() string {
	if p := ld.lastErr.Load(); p != nil {
		return *p
	}
	return ""
}

// stop ends the load and waits for its goroutines.
func (ld *load) stop() {
	ld.stopLoad()
	ld.wg.Wait()
}

// ackedSince reports whether a call was confirmed after t0.
func (ld *load) ackedSince(t0 time.Time) bool {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return ld.lastAck.After(t0)
}

// firstAckSince returns when the first call confirmed after t0 was: the
// confirmations are recorded by event, so it scans them.
func (ld *load) firstAckSince(t0 time.Time) time.Time {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	first := int64(0)
	for _, at := range ld.acked {
		if at > t0.UnixNano() && (first == 0 || at < first) {
			first = at
		}
	}
	return time.Unix(0, first)
}

// resetGap starts measuring the longest stretch without a confirmation
// from now.
func (ld *load) resetGap() {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	ld.gap, ld.lastAck = 0, time.Now()
}

// stats returns the longest gap since resetGap and the events confirmed.
func (ld *load) stats() (gap time.Duration, acked int) {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return ld.gap, len(ld.acked)
}

// lost stops the load, reads the topic back and returns the summary of
// confirmed events that are missing, and when each missing one was
// confirmed. With mustKeep the first 10 missing events fail the test;
// without it (a mode that may lose acked events) they are only logged.
func (ld *load) lost(t *testing.T, mustKeep bool, read func() (map[string]struct{}, int)) (Summary, []time.Time) {
	t.Helper()
	ld.stop()
	found, dups := read()
	var lostAt []time.Time
	for id, at := range ld.acked {
		if _, ok := found[id]; !ok {
			lostAt = append(lostAt, time.Unix(0, at))
			if len(lostAt) <= 10 {
				report := t.Logf
				if mustKeep {
					report = t.Errorf
				}
				report("acked event %s (confirmed %s) is missing", id, time.Unix(0, at).Format("15:04:05.000"))
			}
		}
	}
	return Summary{Acked: len(ld.acked), Found: len(found), Lost: len(lostAt), Duplicates: dups}, lostAt
}
