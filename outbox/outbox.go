package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/event"
)

// DefaultTable is the outbox table's name unless WithTable says otherwise.
const DefaultTable = "herald_outbox"

// Partitions is how many partitions an outbox table is split into by key
// hash (broker.Partition). A relay holds a partition while it publishes
// from it, so it is also the most relays that can publish at once.
const Partitions = 16

// MaxEventsPerAdd bounds the events of one Add call: each distinct key
// takes a lock in PostgreSQL's shared lock table until the transaction
// ends, and that table is small.
const MaxEventsPerAdd = 1000

// Outbox is an outbox table. It is safe for concurrent use; the pool stays
// the caller's to close.
type Outbox struct {
	pool    *pgxpool.Pool
	table   string // as given
	ident   string // quoted for SQL
	channel string // NOTIFY channel
	ns      int32  // advisory lock namespace of the table's partitions
	notify  bool
	migrate bool
	sql     queries
}

type queries struct {
	insert, lockKeys, notify, lockParts, fetch, remove, status string
}

// Option configures an Outbox.
type Option func(*Outbox)

// WithTable sets the outbox table's name, optionally schema-qualified
// ("billing.outbox"). Each part is a letter or underscore followed by up to
// 47 letters, digits or underscores; it is quoted, so case is kept.
// Default DefaultTable.
func WithTable(name string) Option { return func(o *Outbox) { o.table = name } }

// WithMigrate makes New create the table if it does not exist, as Migrate
// does. Default off: New then only checks the table exists.
func WithMigrate() Option { return func(o *Outbox) { o.migrate = true } }

// WithoutNotify makes Add skip the NOTIFY that wakes relays at commit.
// NOTIFY takes a database-wide lock while a transaction commits, which
// costs commit throughput under many concurrent writers; without it the
// relay finds new rows when it polls. Default: notify.
func WithoutNotify() Option { return func(o *Outbox) { o.notify = false } }

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,47}$`)

// New returns the outbox table in pool's database. It creates the table
// when WithMigrate is given, and otherwise fails if it is missing.
func New(ctx context.Context, pool *pgxpool.Pool, opts ...Option) (*Outbox, error) {
	if pool == nil {
		return nil, errors.New("outbox: pool is nil")
	}
	o, err := newOutbox(opts...)
	if err != nil {
		return nil, err
	}
	o.pool = pool
	if o.migrate {
		if err := o.Migrate(ctx); err != nil {
			return nil, err
		}
		return o, nil
	}
	var exists bool
	if err := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", o.ident).Scan(&exists); err != nil {
		return nil, fmt.Errorf("outbox: table %q: %w", o.table, err)
	}
	if !exists {
		return nil, fmt.Errorf("outbox: table %q does not exist: call Migrate, or pass WithMigrate to New", o.table)
	}
	return o, nil
}

func newOutbox(opts ...Option) (*Outbox, error) {
	o := &Outbox{table: DefaultTable, notify: true}
	for _, opt := range opts {
		opt(o)
	}
	parts := strings.Split(o.table, ".")
	if len(parts) > 2 {
		return nil, fmt.Errorf("outbox: table %q: want name or schema.name", o.table)
	}
	for _, p := range parts {
		if !identRE.MatchString(p) {
			return nil, fmt.Errorf("outbox: table %q: part %q must be a letter or underscore followed by up to 47 letters, digits or underscores", o.table, p)
		}
	}
	o.ident = pgx.Identifier(parts).Sanitize()
	o.channel = "herald_outbox_" + fmt.Sprintf("%08x", hash32(o.ident))
	o.ns = int32(hash32("herald-outbox:" + o.ident))
	o.sql = buildQueries(o.ident)
	return o, nil
}

// defaultOutbox is the table Add writes to: DefaultTable, with NOTIFY.
var defaultOutbox, _ = newOutbox()

// Add writes events into DefaultTable inside tx; see (*Outbox).Add.
func Add(ctx context.Context, tx pgx.Tx, events ...*event.Event) error {
	return defaultOutbox.Add(ctx, tx, events...)
}

// Migrate creates the outbox table and its index if they do not exist.
// Concurrent calls, from any process, are safe.
func (o *Outbox) Migrate(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, o.pool, func(tx pgx.Tx) error {
		// CREATE ... IF NOT EXISTS races with itself; serialise creators.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext($1))", "herald-outbox-migrate:"+o.ident); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, fmt.Sprintf(`
CREATE TABLE IF NOT EXISTS %[1]s (
	id         bigserial PRIMARY KEY,
	part       int NOT NULL,
	event_id   text NOT NULL,
	type       text NOT NULL,
	key        text NOT NULL,
	headers    jsonb NOT NULL,
	data       bytea,
	created_at timestamptz NOT NULL DEFAULT clock_timestamp()
)`, o.ident))
		return err
	})
	if err != nil {
		return fmt.Errorf("outbox: migrate table %q: %w", o.table, err)
	}
	return nil
}

// Table returns the outbox table's name as configured.
func (o *Outbox) Table() string { return o.table }

func buildQueries(t string) queries {
	return queries{
		insert: fmt.Sprintf(`
INSERT INTO %s (part, event_id, type, key, headers, data)
SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::bytea[])`, t),
		// unnest yields the hashes in the (sorted) order given, so two
		// transactions take shared keys' locks in the same order.
		lockKeys: `SELECT count(pg_advisory_xact_lock(h)) FROM unnest($1::bigint[]) AS h`,
		notify:   `SELECT pg_notify($1, '')`,
		lockParts: `
SELECT coalesce(array_agg(p), '{}') FROM generate_series(0, $2::int - 1) AS p
WHERE pg_try_advisory_xact_lock($1::int, p)`,
		fetch: fmt.Sprintf(`
SELECT id, headers, data, created_at FROM %s WHERE part = ANY($1::int[]) ORDER BY id LIMIT $2`, t),
		remove: fmt.Sprintf(`DELETE FROM %s WHERE id = ANY($1::bigint[])`, t),
		status: fmt.Sprintf(`
SELECT part, count(*), min(created_at), clock_timestamp() FROM %s GROUP BY part ORDER BY part`, t),
	}
}

// Add writes events into the outbox table inside tx: they are published
// after tx commits, and never if it rolls back. Events need an id, a
// source and a type (event.New gives an id); their partition key
// (Event.Key) orders them.
//
// For each distinct non-empty key Add takes a lock that tx holds until it
// ends, so a second transaction adding events of the same key waits for
// the first to commit or roll back. That is what keeps events of one key
// in commit order. Keys are locked in hash order, so two Add calls never
// deadlock on each other's keys; a transaction that also locks rows of its
// own in a different order can deadlock, and PostgreSQL then aborts one.
// One call takes at most MaxEventsPerAdd events.
func (o *Outbox) Add(ctx context.Context, tx pgx.Tx, events ...*event.Event) error {
	if tx == nil {
		return errors.New("outbox: add: transaction is nil")
	}
	if len(events) == 0 {
		return nil
	}
	if len(events) > MaxEventsPerAdd {
		return fmt.Errorf("outbox: add: %d events in one call, more than the %d allowed: split them over several calls", len(events), MaxEventsPerAdd)
	}
	n := len(events)
	parts := make([]int32, n)
	ids, types, keys := make([]string, n), make([]string, n), make([]string, n)
	headers := make([]string, n)
	data := make([][]byte, n)
	locks := make([]int64, 0, n)
	h := make(map[string]string, 12)
	for i, e := range events {
		if e == nil {
			return fmt.Errorf("outbox: add: event %d is nil", i)
		}
		if err := e.Validate(); err != nil {
			return fmt.Errorf("outbox: add: event %d (%s): %w", i, e.Type, err)
		}
		if err := broker.ValidateRoute(e.Type); err != nil {
			return fmt.Errorf("outbox: add: event %d: type: %w", i, err)
		}
		clear(h)
		event.NATS.Encode(e, h)
		b, err := json.Marshal(h)
		if err != nil {
			return fmt.Errorf("outbox: add: event %d (%s): %w", i, e.ID, err)
		}
		key := e.Key()
		parts[i] = int32(broker.Partition(key, Partitions))
		ids[i], types[i], keys[i], headers[i], data[i] = e.ID, e.Type, key, string(b), e.Data
		if key != "" {
			locks = append(locks, keyLock(o.ident, key))
		}
	}
	slices.Sort(locks)
	locks = slices.Compact(locks)

	b := &pgx.Batch{}
	if len(locks) > 0 {
		b.Queue(o.sql.lockKeys, locks)
	}
	b.Queue(o.sql.insert, parts, ids, types, keys, headers, data)
	if o.notify {
		b.Queue(o.sql.notify, o.channel)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("outbox: add %d events to %q: %w", n, o.table, err)
	}
	return nil
}

// keyLock is the advisory lock id of key in table t.
func keyLock(t, key string) int64 {
	f := fnv.New64a()
	_, _ = f.Write([]byte(t))
	_, _ = f.Write([]byte{0})
	_, _ = f.Write([]byte(key))
	return int64(f.Sum64())
}

func hash32(s string) uint32 {
	f := fnv.New32a()
	_, _ = f.Write([]byte(s))
	return f.Sum32()
}

// Status is a snapshot of an outbox table's backlog.
type Status struct {
	// Table is the outbox table's name.
	Table string `json:"table"`
	// Pending is how many events wait to be published.
	Pending int64 `json:"pending"`
	// Oldest is when the oldest pending event was added; zero when none is.
	Oldest time.Time `json:"oldest,omitzero"`
	// Lag is how long the oldest pending event has waited (database clock).
	Lag time.Duration `json:"lag_ns"`
	// Partitions lists the partitions with pending events.
	Partitions []PartitionStatus `json:"partitions"`
}

// PartitionStatus is the backlog of one partition.
type PartitionStatus struct {
	Partition int           `json:"partition"`
	Pending   int64         `json:"pending"`
	Lag       time.Duration `json:"lag_ns"`
}

// Status counts the pending events. It reads the whole table, so call it
// for a look or a metric now and then, not in a hot loop.
func (o *Outbox) Status(ctx context.Context) (Status, error) {
	st := Status{Table: o.table, Partitions: []PartitionStatus{}}
	rows, err := o.pool.Query(ctx, o.sql.status)
	if err != nil {
		return st, fmt.Errorf("outbox: status of %q: %w", o.table, err)
	}
	defer rows.Close()
	for rows.Next() {
		var p PartitionStatus
		var oldest, now time.Time
		if err := rows.Scan(&p.Partition, &p.Pending, &oldest, &now); err != nil {
			return st, fmt.Errorf("outbox: status of %q: %w", o.table, err)
		}
		p.Lag = now.Sub(oldest)
		st.Pending += p.Pending
		if st.Oldest.IsZero() || oldest.Before(st.Oldest) {
			st.Oldest, st.Lag = oldest, p.Lag
		}
		st.Partitions = append(st.Partitions, p)
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("outbox: status of %q: %w", o.table, err)
	}
	return st, nil
}
