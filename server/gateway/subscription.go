package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
)

// Subscription is a consumer group the gateway serves over HTTP: pushed
// to a webhook (Push set) or pulled by the service (Push empty).
type Subscription struct {
	// Group is the consumer group; it names the subscription.
	Group string `json:"group"`
	// Topic the group consumes.
	Topic string `json:"topic"`
	// Push is the webhook URL events are delivered to; empty for a pull
	// subscription.
	Push string `json:"push,omitempty"`
	// Secret signs push deliveries (see Sign). Answers of the API carry
	// it only when the subscription is created.
	Secret string `json:"secret,omitempty"`
	// Start is where a new group begins: "new" (default), "first",
	// "seq:N" or "time:RFC3339".
	Start string `json:"start,omitempty"`
	// Concurrency bounds the deliveries in flight to the webhook (events
	// of one key go one at a time, in order). Default 16.
	Concurrency int `json:"concurrency,omitempty"`
	// MaxAttempts counts the tries of a delivery, the first included;
	// then it goes to the dead-letter queue. Default 10.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// Timeout bounds one webhook request. Default 10s.
	Timeout Duration `json:"timeout,omitempty"`
	// RetryInitial and RetryMax bound the backoff between tries of a push
	// delivery (doubling, with jitter). Default 1s and 1m.
	RetryInitial Duration `json:"retry_initial,omitempty"`
	RetryMax     Duration `json:"retry_max,omitempty"`
	// Lease is how long a pulled event stays with the caller before it is
	// delivered again. Default 30s.
	Lease Duration `json:"lease,omitempty"`
	// Created is when the subscription was created.
	Created time.Time `json:"created"`
}

// Duration is a time.Duration that reads and writes JSON as text ("10s").
type Duration time.Duration

// MarshalJSON writes d as text.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "10s" or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("duration %s: want text such as \"10s\"", b)
		}
		*d = Duration(n)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: want text such as \"10s\"", s)
	}
	*d = Duration(v)
	return nil
}

// Defaults of a subscription.
const (
	DefaultConcurrency  = 16
	DefaultMaxAttempts  = 10
	DefaultTimeout      = 10 * time.Second
	DefaultRetryInitial = time.Second
	DefaultRetryMax     = time.Minute
	DefaultLease        = 30 * time.Second
	maxLease            = 12 * time.Hour
)

// withDefaults validates s and fills its defaults. The error names the
// field.
func (s Subscription) withDefaults() (Subscription, error) {
	if err := broker.ValidateName("group", s.Group); err != nil {
		return s, fmt.Errorf("group: %w", err)
	}
	if err := broker.ValidateName("topic", s.Topic); err != nil {
		return s, fmt.Errorf("topic: %w", err)
	}
	if _, err := broker.ParseStart(s.Start); err != nil {
		return s, err
	}
	if s.Push != "" {
		u, err := url.Parse(s.Push)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return s, fmt.Errorf("push URL %q: want http(s)://host/path", s.Push)
		}
		if s.Secret == "" {
			s.Secret = NewSecret()
		}
		if _, err := SecretKey(s.Secret); err != nil {
			return s, err
		}
	} else if s.Secret != "" {
		return s, errors.New("secret: only push subscriptions sign deliveries")
	}
	switch {
	case s.Concurrency < 0 || s.Concurrency > 1024:
		return s, fmt.Errorf("concurrency %d: want 1 to 1024", s.Concurrency)
	case s.MaxAttempts < 0:
		return s, fmt.Errorf("max_attempts %d: must not be negative", s.MaxAttempts)
	case s.Timeout < 0 || s.RetryInitial < 0 || s.RetryMax < 0 || s.Lease < 0:
		return s, errors.New("timeout, retry_initial, retry_max and lease must not be negative")
	case time.Duration(s.Lease) > maxLease:
		return s, fmt.Errorf("lease %v: at most %v", time.Duration(s.Lease), maxLease)
	}
	if s.Concurrency == 0 {
		s.Concurrency = DefaultConcurrency
	}
	if s.MaxAttempts == 0 {
		s.MaxAttempts = DefaultMaxAttempts
	}
	def := func(d *Duration, v time.Duration) {
		if *d == 0 {
			*d = Duration(v)
		}
	}
	def(&s.Timeout, DefaultTimeout)
	def(&s.RetryInitial, DefaultRetryInitial)
	def(&s.RetryMax, DefaultRetryMax)
	def(&s.Lease, DefaultLease)
	if s.RetryMax < s.RetryInitial {
		return s, fmt.Errorf("retry_max %v is below retry_initial %v", time.Duration(s.RetryMax), time.Duration(s.RetryInitial))
	}
	if s.Created.IsZero() {
		s.Created = time.Now().UTC()
	}
	return s, nil
}

// Bucket is the JetStream key-value bucket subscriptions are kept in,
// keyed by group.
const Bucket = "herald_subscriptions"

// ErrExists is returned when creating a subscription whose group is
// taken.
var ErrExists = errors.New("subscription exists")

// Store keeps subscriptions durably in a JetStream key-value bucket, so
// they survive a restart and every server of a cluster sees them. It is
// safe for concurrent use.
type Store struct {
	kv jetstream.KeyValue
}

// NewStore opens (creating if needed) the subscriptions bucket, with
// replicas copies in a cluster (0 or 1 on a single server).
func NewStore(ctx context.Context, js jetstream.JetStream, replicas int) (*Store, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: Bucket, Description: "Herald HTTP subscriptions (push and pull)", History: 1, Storage: jetstream.FileStorage,
		Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: subscriptions bucket: %w", err)
	}
	return &Store{kv: kv}, nil
}

// Create stores s; ErrExists if its group has a subscription.
func (st *Store) Create(ctx context.Context, s Subscription) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if _, err := st.kv.Create(ctx, s.Group, b); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("%w: group %q", ErrExists, s.Group)
		}
		return fmt.Errorf("gateway: store subscription %q: %w", s.Group, err)
	}
	return nil
}

// Get returns the subscription of group, or ErrUnknownGroup.
func (st *Store) Get(ctx context.Context, group string) (Subscription, error) {
	e, err := st.kv.Get(ctx, group)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return Subscription{}, fmt.Errorf("%w %q", ErrUnknownGroup, group)
		}
		return Subscription{}, fmt.Errorf("gateway: read subscription %q: %w", group, err)
	}
	return decodeSub(e.Value())
}

// Delete removes the subscription of group, or returns ErrUnknownGroup.
func (st *Store) Delete(ctx context.Context, group string) error {
	if _, err := st.Get(ctx, group); err != nil {
		return err
	}
	if err := st.kv.Delete(ctx, group); err != nil {
		return fmt.Errorf("gateway: delete subscription %q: %w", group, err)
	}
	return nil
}

// List returns every subscription.
func (st *Store) List(ctx context.Context) ([]Subscription, error) {
	lister, err := st.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("gateway: list subscriptions: %w", err)
	}
	var out []Subscription
	for k := range lister.Keys() {
		s, err := st.Get(ctx, k)
		if errors.Is(err, ErrUnknownGroup) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// watch calls apply for every subscription and every later change (nil
// sub: deleted), and ready once the existing ones were applied; it
// returns when ctx ends.
func (st *Store) watch(ctx context.Context, apply func(group string, s *Subscription), ready func()) error {
	w, err := st.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("gateway: watch subscriptions: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e == nil {
				ready()
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				apply(e.Key(), nil)
				continue
			}
			s, err := decodeSub(e.Value())
			if err != nil {
				continue // not ours to read; Get reports it
			}
			apply(e.Key(), &s)
		}
	}
}

func decodeSub(b []byte) (Subscription, error) {
	var s Subscription
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("gateway: stored subscription does not decode: %w", err)
	}
	return s, nil
}
