package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/event"
)

// Publisher publishes events and returns once the broker confirmed every
// one, deduplicating by event id. *herald.Client is one.
type Publisher interface {
	Publish(ctx context.Context, events ...*event.Event) error
}

// Defaults of a Relay.
const (
	DefaultBatch        = 500
	DefaultPollInterval = time.Second
	DefaultTimeout      = 30 * time.Second
)

// Relay publishes the events of an outbox table and deletes them once the
// broker confirmed them. Run as many as you like on one table (one per
// service instance, say): they share the partitions out batch by batch.
type Relay struct {
	o       *Outbox
	pub     Publisher
	log     *slog.Logger
	batch   int
	poll    time.Duration
	timeout time.Duration
	reg     prometheus.Registerer
	m       *relayMetrics
	wake    chan struct{}
}

// RelayOption configures a Relay.
type RelayOption func(*Relay)

// WithOutbox sets the table the relay publishes from. Default DefaultTable
// (which must exist).
func WithOutbox(o *Outbox) RelayOption { return func(r *Relay) { r.o = o } }

// WithBatch sets how many events the relay reads, publishes and deletes in
// one transaction. Larger batches publish faster and republish more after
// a crash. Default DefaultBatch.
func WithBatch(n int) RelayOption { return func(r *Relay) { r.batch = n } }

// WithPollInterval sets how often the relay looks for events without
// being notified. Default DefaultPollInterval.
func WithPollInterval(d time.Duration) RelayOption { return func(r *Relay) { r.poll = d } }

// WithPublishTimeout bounds one batch's publish. Default DefaultTimeout.
func WithPublishTimeout(d time.Duration) RelayOption { return func(r *Relay) { r.timeout = d } }

// WithLogger sets the logger. Default slog.Default().
func WithLogger(l *slog.Logger) RelayOption { return func(r *Relay) { r.log = l } }

// WithRegisterer registers the relay's metrics with reg:
// herald_outbox_published_total, herald_outbox_publish_errors_total,
// herald_outbox_relay_lag_seconds (from Add's commit to the broker's
// confirmation), herald_outbox_backlog and herald_outbox_oldest_seconds
// (refreshed every 10 poll intervals), each labelled with the table.
// Default: no metrics.
func WithRegisterer(reg prometheus.Registerer) RelayOption {
	return func(r *Relay) { r.reg = reg }
}

// NewRelay returns a relay publishing with pub from the outbox table in
// pool's database.
func NewRelay(ctx context.Context, pool *pgxpool.Pool, pub Publisher, opts ...RelayOption) (*Relay, error) {
	if pool == nil {
		return nil, errors.New("outbox: relay: pool is nil")
	}
	if pub == nil {
		return nil, errors.New("outbox: relay: publisher is nil")
	}
	r := &Relay{pub: pub, log: slog.Default(), batch: DefaultBatch, poll: DefaultPollInterval, timeout: DefaultTimeout, wake: make(chan struct{}, 1)}
	for _, o := range opts {
		o(r)
	}
	switch {
	case r.batch < 1:
		return nil, fmt.Errorf("outbox: relay: WithBatch %d: must be at least 1", r.batch)
	case r.poll <= 0:
		return nil, fmt.Errorf("outbox: relay: WithPollInterval %v: must be positive", r.poll)
	case r.timeout <= 0:
		return nil, fmt.Errorf("outbox: relay: WithPublishTimeout %v: must be positive", r.timeout)
	}
	if r.o == nil {
		o, err := New(ctx, pool)
		if err != nil {
			return nil, fmt.Errorf("outbox: relay: %w", err)
		}
		r.o = o
	} else if r.o.pool != pool {
		return nil, errors.New("outbox: relay: WithOutbox: the outbox uses another pool")
	}
	if r.reg != nil {
		m, err := newRelayMetrics(r.reg, r.o.table)
		if err != nil {
			return nil, err
		}
		r.m = m
	}
	return r, nil
}

// Run publishes until ctx is done, then returns nil. Database and broker
// errors are logged and retried; the events stay in the table meanwhile.
func (r *Relay) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	lctx, stop := context.WithCancel(ctx)
	wg.Go(func() { r.listen(lctx) })
	defer func() { stop(); wg.Wait() }()

	tick := time.NewTicker(r.poll)
	defer tick.Stop()
	backoff := r.poll
	ticks := 0
	for {
		err := r.drain(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := r.poll
		if err != nil {
			r.log.Warn("outbox relay: batch failed; retrying", "table", r.o.table, "err", err, "retry_in", backoff)
			wait, backoff = backoff, min(backoff*2, 30*time.Second)
		} else {
			backoff = r.poll
		}
		if ticks++; r.m != nil && ticks%10 == 1 {
			r.refreshBacklog(ctx)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-r.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// drain publishes batches until one comes back short.
func (r *Relay) drain(ctx context.Context) error {
	for {
		n, err := r.Step(ctx)
		if err != nil || n < r.batch {
			return err
		}
	}
}

// Step publishes one batch: in one transaction it locks the partitions no
// other relay holds, reads up to the batch size of their events in id
// order, publishes them and deletes them. It returns how many it
// published. Run calls it in a loop; it is exported for tools and tests
// that drive a relay by hand.
func (r *Relay) Step(ctx context.Context) (int, error) {
	tx, err := r.o.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("outbox: relay %q: begin: %w", r.o.table, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var parts []int32
	if err := tx.QueryRow(ctx, r.o.sql.lockParts, r.o.ns, Partitions).Scan(&parts); err != nil {
		return 0, fmt.Errorf("outbox: relay %q: lock partitions: %w", r.o.table, err)
	}
	if len(parts) == 0 {
		return 0, nil // every partition is another relay's right now
	}
	rows, err := tx.Query(ctx, r.o.sql.fetch, parts, r.batch)
	if err != nil {
		return 0, fmt.Errorf("outbox: relay %q: read: %w", r.o.table, err)
	}
	var ids []int64
	var events []*event.Event
	var added []time.Time
	for rows.Next() {
		var id int64
		var hdr []byte
		var data []byte
		var at time.Time
		if err := rows.Scan(&id, &hdr, &data, &at); err != nil {
			rows.Close()
			return 0, fmt.Errorf("outbox: relay %q: read: %w", r.o.table, err)
		}
		var h map[string]string
		if err := json.Unmarshal(hdr, &h); err != nil {
			rows.Close()
			return 0, fmt.Errorf("outbox: relay %q: row %d: headers: %w", r.o.table, id, err)
		}
		e, err := event.NATS.Decode(h, data)
		if err != nil {
			rows.Close()
			return 0, fmt.Errorf("outbox: relay %q: row %d: %w", r.o.table, id, err)
		}
		ids, events, added = append(ids, id), append(events, e), append(added, at)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("outbox: relay %q: read: %w", r.o.table, err)
	}
	if len(events) == 0 {
		return 0, tx.Commit(ctx)
	}
	pctx, cancel := context.WithTimeout(ctx, r.timeout)
	err = r.pub.Publish(pctx, events...)
	cancel()
	if err != nil {
		if r.m != nil {
			r.m.errors.Inc()
		}
		return 0, fmt.Errorf("outbox: relay %q: publish %d events: %w", r.o.table, len(events), err)
	}
	if _, err := tx.Exec(ctx, r.o.sql.remove, ids); err != nil {
		return 0, fmt.Errorf("outbox: relay %q: delete published rows: %w", r.o.table, err)
	}
	if err := tx.Commit(ctx); err != nil {
		// The events are published; the rows come back and are published
		// again, which the broker's dedup absorbs.
		return 0, fmt.Errorf("outbox: relay %q: commit: %w", r.o.table, err)
	}
	if r.m != nil {
		now := time.Now()
		r.m.published.Add(float64(len(events)))
		for _, at := range added {
			r.m.lag.Observe(now.Sub(at).Seconds())
		}
	}
	return len(events), nil
}

// listen wakes the relay on each NOTIFY until ctx is done, reconnecting
// after errors.
func (r *Relay) listen(ctx context.Context) {
	for ctx.Err() == nil {
		err := r.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		r.log.Debug("outbox relay: listen failed; polling meanwhile", "table", r.o.table, "err", err)
		t := time.NewTimer(r.poll)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

func (r *Relay) listenOnce(ctx context.Context) error {
	conn, err := r.o.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// A connection that was LISTENing goes back to no pool: close it.
	defer func() { _ = conn.Hijack().Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{r.o.channel}.Sanitize()); err != nil {
		return err
	}
	r.poke() // rows may have come in before LISTEN
	for {
		if _, err := conn.Conn().WaitForNotification(ctx); err != nil {
			return err
		}
		r.poke()
	}
}

func (r *Relay) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *Relay) refreshBacklog(ctx context.Context) {
	st, err := r.o.Status(ctx)
	if err != nil {
		return
	}
	r.m.backlog.Set(float64(st.Pending))
	r.m.oldest.Set(st.Lag.Seconds())
}

type relayMetrics struct {
	published, errors prometheus.Counter
	lag               prometheus.Observer
	backlog, oldest   prometheus.Gauge
}

// Shared vectors, so that relays on several tables in one process can
// register with one registry.
func newRelayMetrics(reg prometheus.Registerer, table string) (*relayMetrics, error) {
	published := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_outbox_published_total", Help: "Outbox events published and deleted."}, []string{"table"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_outbox_publish_errors_total", Help: "Outbox batches the broker did not confirm."}, []string{"table"})
	lag := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "herald_outbox_relay_lag_seconds", Help: "Time from an outbox event's insert to the broker's confirmation.",
		Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}}, []string{"table"})
	backlog := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "herald_outbox_backlog", Help: "Outbox events waiting to be published."}, []string{"table"})
	oldest := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "herald_outbox_oldest_seconds", Help: "Age of the oldest outbox event waiting to be published."}, []string{"table"})
	var err error
	if published, err = register(reg, published); err != nil {
		return nil, err
	}
	if errs, err = register(reg, errs); err != nil {
		return nil, err
	}
	if lag, err = register(reg, lag); err != nil {
		return nil, err
	}
	if backlog, err = register(reg, backlog); err != nil {
		return nil, err
	}
	if oldest, err = register(reg, oldest); err != nil {
		return nil, err
	}
	return &relayMetrics{
		published: published.WithLabelValues(table), errors: errs.WithLabelValues(table),
		lag: lag.WithLabelValues(table), backlog: backlog.WithLabelValues(table), oldest: oldest.WithLabelValues(table),
	}, nil
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("outbox: relay metrics: %w", err)
	}
	return c, nil
}
