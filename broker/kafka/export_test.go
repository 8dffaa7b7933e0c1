package kafka

import "github.com/heraldhq/herald/broker"

// Crash makes sub stop committing, as if its process were killed after its
// last periodic commit, then closes it. Its group sees only what it had
// committed before.
func Crash(sub broker.Subscription) {
	s := sub.(*subscription)
	s.commitMu.Lock() // after any commit in flight, none more
	s.crashed.Store(true)
	s.commitMu.Unlock()
	_ = s.Close()
}
