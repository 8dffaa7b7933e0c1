package consumer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/heraldhq/herald/broker"
)

// Headers a dead-lettered message carries besides the original ones. The
// payload and the original (CloudEvents) headers are unchanged, so the
// event can be redriven as it was.
const (
	HeaderError            = "Herald-Error"
	HeaderAttempts         = "Herald-Attempts"
	HeaderFirstFailure     = "Herald-First-Failure"
	HeaderLastFailure      = "Herald-Last-Failure"
	HeaderHandler          = "Herald-Handler"
	HeaderGroup            = "Herald-Group"
	HeaderOriginalTopic    = "Herald-Original-Topic"
	HeaderOriginalSequence = "Herald-Original-Sequence"
	HeaderOriginalID       = "Herald-Original-Id"
	HeaderOriginalKey      = "Herald-Original-Key"
	// HeaderRedrives counts how often an event was redriven from the
	// dead-letter queue; it is part of the dead letter's dedup id so an
	// event that fails again after a redrive is dead-lettered again.
	HeaderRedrives = "Herald-Redrives"
	// HeaderRedriveGroup, on a redriven event, names the one group meant to
	// handle it again; the topic's other groups acknowledge it unhandled
	// (OutcomeSkipped), since they handled the original.
	HeaderRedriveGroup = "Herald-Redrive-Group"
)

// DeadLetterTopic is the default dead-letter topic of topic: "<topic>.dlq".
func DeadLetterTopic(topic string) string { return topic + ".dlq" }

// IsDeadLetterTopic reports whether topic is a default dead-letter topic.
func IsDeadLetterTopic(topic string) bool {
	return len(topic) > 4 && topic[len(topic)-4:] == ".dlq"
}

// SourceTopic returns the topic a default dead-letter topic collects the
// failures of ("orders" for "orders.dlq"), or topic itself if it is not one.
func SourceTopic(topic string) string {
	if IsDeadLetterTopic(topic) {
		return topic[:len(topic)-4]
	}
	return topic
}

// DeadLetter moves events that failed permanently (retries exhausted,
// Permanent errors, poison messages) to the dead-letter topic through pub,
// then reports success so the original is acknowledged. If the dead-letter
// publish fails, the event is redelivered later instead: never lost.
func DeadLetter(pub broker.Publisher, topic func(string) string) Middleware {
	return newDeadLetterer(pub, topic).middleware
}

type deadLetterer struct {
	pub   broker.Publisher
	topic func(string) string

	// first failure times by delivery key, for the events this process
	// saw fail; bounded.
	mu    sync.Mutex
	first map[string]time.Time
}

const maxFirstFailures = 100_000

func newDeadLetterer(pub broker.Publisher, topic func(string) string) *deadLetterer {
	if topic == nil {
		topic = DeadLetterTopic
	}
	return &deadLetterer{pub: pub, topic: topic, first: map[string]time.Time{}}
}

func failureKey(m *Message) string {
	if m.Event != nil {
		return m.Group + "/" + m.Event.ID
	}
	return m.Group + "/" + m.Topic + "/" + strconv.FormatUint(m.Sequence, 10)
}

func (dl *deadLetterer) middleware(next Handler) Handler {
	return func(ctx context.Context, m *Message) error {
		err := next(ctx, m)
		now := time.Now()
		if err == nil {
			if m.Attempt > 1 {
				dl.forget(failureKey(m))
			}
			return nil
		}
		if !errors.Is(err, ErrPermanent) {
			dl.remember(failureKey(m), now)
			return err
		}
		first := dl.remember(failureKey(m), now)
		msg := dl.message(m, err, first, now)
		if perr := dl.pub.Publish(ctx, msg); perr != nil {
			return RetryAfter(fmt.Errorf("dead letter to %q failed (will retry): %w (original failure: %w)", msg.Topic, perr, err), 5*time.Second)
		}
		dl.forget(failureKey(m))
		m.outcome = OutcomeDeadLetter
		return nil
	}
}

func (dl *deadLetterer) remember(key string, now time.Time) time.Time {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if t, ok := dl.first[key]; ok {
		return t
	}
	if len(dl.first) >= maxFirstFailures {
		for k := range dl.first { // drop an arbitrary entry
			delete(dl.first, k)
			break
		}
	}
	dl.first[key] = now
	return now
}

func (dl *deadLetterer) forget(key string) {
	dl.mu.Lock()
	delete(dl.first, key)
	dl.mu.Unlock()
}

// message builds the dead letter. When another process saw the first
// failures, the first failure time falls back to when the broker stored
// the event (no later than the real first failure).
func (dl *deadLetterer) message(m *Message, err error, first, now time.Time) *broker.Message {
	if m.Attempt > 1 && first.Equal(now) && !m.Stored.IsZero() {
		first = m.Stored
	}
	raw := m.Raw
	h := make(map[string]string, len(raw.Header)+10)
	for k, v := range raw.Header {
		h[k] = v
	}
	h[HeaderError] = truncate(err.Error(), 4096)
	h[HeaderAttempts] = strconv.Itoa(m.Attempt)
	h[HeaderFirstFailure] = first.UTC().Format(time.RFC3339Nano)
	h[HeaderLastFailure] = now.UTC().Format(time.RFC3339Nano)
	h[HeaderHandler] = m.Handler
	h[HeaderGroup] = m.Group
	h[HeaderOriginalTopic] = m.Topic
	h[HeaderOriginalSequence] = strconv.FormatUint(m.Sequence, 10)
	if raw.ID != "" {
		h[HeaderOriginalID] = raw.ID
	}
	if raw.Key != "" {
		h[HeaderOriginalKey] = raw.Key
	}
	id := raw.ID
	if id == "" {
		id = m.Topic + "/" + strconv.FormatUint(m.Sequence, 10)
	}
	redrives := raw.Header[HeaderRedrives]
	if redrives == "" {
		redrives = "0"
	}
	route := raw.Route
	if route == "" {
		route = "unknown"
	}
	return &broker.Message{
		Topic:  dl.topic(m.Topic),
		Route:  route,
		Key:    raw.Key,
		ID:     m.Group + ":" + id + ":" + redrives,
		Header: h,
		Data:   raw.Data,
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
