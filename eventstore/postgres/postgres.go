// Package postgres is an eventstore.Store on PostgreSQL (pgx).
//
// Tables, for the default prefix "herald_es":
//
//	herald_es_streams  one row per stream: its version and metadata; the
//	                   row lock serialises appends to one stream
//	herald_es_events   one row per event: position (from the sequence
//	                   herald_es_position), stream, version, event id,
//	                   type, the envelope's attributes (jsonb) and data;
//	                   UNIQUE (stream, version) and UNIQUE (stream, event_id)
//
// # The global order and its gaps
//
// Positions come from a sequence, so a transaction can take position 10,
// another position 11 and commit first. A reader that saw 11 and recorded
// it as its checkpoint would never see 10. ReadAll therefore reads only up
// to a horizon below which no transaction can still commit: it reads the
// sequence's last value L, then takes a transaction id M of its own, and
// waits until the oldest transaction running on the server is younger
// than M (pg_snapshot_xmin). An append takes its transaction id before
// its positions, so every append holding a position up to L has an id
// below M and has ended by then: ReadAll returns every committed event up
// to L, and a gap below L is a rolled-back append that will never fill.
//
// The cost: ReadAll waits for the transactions that were open on the
// server when it started, including ones that have nothing to do with the
// event store. A transaction left open for minutes delays readers (never
// writers) by as long.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/eventstore"
)

// DefaultPrefix prefixes the store's tables unless WithPrefix says
// otherwise.
const DefaultPrefix = "herald_es"

// pageSize is how many events ReadAll fetches per query.
const pageSize = 1000

// Store is an eventstore.Store on PostgreSQL. It is safe for concurrent
// use by many goroutines and processes. The pool stays the caller's to
// close.
type Store struct {
	pool    *pgxpool.Pool
	prefix  string
	migrate bool
	poll    time.Duration
	t       tables
}

type tables struct{ events, streams, seq, seqName string }

// Option configures a Store.
type Option func(*Store)

// WithPrefix sets the prefix of the store's table names: a letter or
// underscore followed by up to 40 letters, digits or underscores.
// Default DefaultPrefix.
func WithPrefix(p string) Option { return func(s *Store) { s.prefix = p } }

// WithMigrate makes New create the tables if they do not exist. Default
// off: New then only checks that they exist.
func WithMigrate() Option { return func(s *Store) { s.migrate = true } }

// WithHorizonPoll sets how often ReadAll checks whether the transactions
// it waits for have ended. Default 2ms.
func WithHorizonPoll(d time.Duration) Option { return func(s *Store) { s.poll = d } }

var prefixRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,40}$`)

// New returns a Store on the tables in pool's database.
func New(ctx context.Context, pool *pgxpool.Pool, opts ...Option) (*Store, error) {
	if pool == nil {
		return nil, errors.New("eventstore/postgres: pool is nil")
	}
	s := &Store{pool: pool, prefix: DefaultPrefix, poll: 2 * time.Millisecond}
	for _, o := range opts {
		o(s)
	}
	if !prefixRE.MatchString(s.prefix) {
		return nil, fmt.Errorf("eventstore/postgres: prefix %q: want a letter or underscore followed by up to 40 letters, digits or underscores", s.prefix)
	}
	if s.poll <= 0 {
		return nil, fmt.Errorf("eventstore/postgres: horizon poll %v must be positive", s.poll)
	}
	s.t = tables{
		events:  pgx.Identifier{s.prefix + "_events"}.Sanitize(),
		streams: pgx.Identifier{s.prefix + "_streams"}.Sanitize(),
		seq:     pgx.Identifier{s.prefix + "_position"}.Sanitize(),
		seqName: s.prefix + "_position",
	}
	if s.migrate {
		if err := s.Migrate(ctx); err != nil {
			return nil, err
		}
		return s, nil
	}
	var exists bool
	if err := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL", s.t.events, s.t.streams).Scan(&exists); err != nil {
		return nil, fmt.Errorf("eventstore/postgres: prefix %q: %w", s.prefix, err)
	}
	if !exists {
		return nil, fmt.Errorf("eventstore/postgres: tables %s_events and %s_streams do not exist: call Migrate, or pass WithMigrate to New", s.prefix, s.prefix)
	}
	return s, nil
}

// Prefix returns the prefix of the store's tables.
func (s *Store) Prefix() string { return s.prefix }

// Migrate creates the tables and the sequence if they do not exist.
// Concurrent calls, from any process, are safe.
func (s *Store) Migrate(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext($1))", "herald-eventstore:"+s.prefix); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, fmt.Sprintf(`
CREATE SEQUENCE IF NOT EXISTS %[3]s AS bigint CACHE 1;
CREATE TABLE IF NOT EXISTS %[2]s (
	stream          text PRIMARY KEY,
	version         bigint NOT NULL DEFAULT 0,
	max_age_us      bigint NOT NULL DEFAULT 0,
	max_count       bigint NOT NULL DEFAULT 0,
	truncate_before bigint NOT NULL DEFAULT 0,
	tombstoned      boolean NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS %[1]s (
	position    bigint PRIMARY KEY DEFAULT nextval('%[4]s'),
	stream      text NOT NULL,
	version     bigint NOT NULL,
	event_id    text NOT NULL,
	type        text NOT NULL,
	attrs       jsonb NOT NULL,
	data        bytea,
	recorded_at timestamptz NOT NULL DEFAULT now(),
	UNIQUE (stream, version),
	UNIQUE (stream, event_id)
)`, s.t.events, s.t.streams, s.t.seq, s.t.seqName))
		return err
	})
	if err != nil {
		return fmt.Errorf("eventstore/postgres: migrate prefix %q: %w", s.prefix, err)
	}
	return nil
}

var _ eventstore.Store = (*Store)(nil)
var _ eventstore.Positioner = (*Store)(nil)

// Append implements eventstore.Store, in a transaction of its own.
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.Expected, events ...*event.Event) (eventstore.AppendResult, error) {
	evs, err := eventstore.Prepare(stream, expected, events)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	var res eventstore.AppendResult
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		res, err = s.appendTx(ctx, tx, stream, expected, evs)
		return err
	})
	if err != nil {
		return eventstore.AppendResult{}, wrap("append to", stream, err)
	}
	return res, nil
}

// AppendTx is Append inside the caller's transaction, so the events commit
// or roll back with the caller's other writes (a business row, an outbox
// entry). The stream stays locked for other appenders until tx ends. The
// result holds only once tx commits.
func (s *Store) AppendTx(ctx context.Context, tx pgx.Tx, stream string, expected eventstore.Expected, events ...*event.Event) (eventstore.AppendResult, error) {
	evs, err := eventstore.Prepare(stream, expected, events)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	res, err := s.appendTx(ctx, tx, stream, expected, evs)
	if err != nil {
		return eventstore.AppendResult{}, wrap("append to", stream, err)
	}
	return res, nil
}

func wrap(op, stream string, err error) error {
	if errors.Is(err, eventstore.ErrConflict) || errors.Is(err, eventstore.ErrDeleted) || errors.Is(err, eventstore.ErrInvalid) {
		return err
	}
	return fmt.Errorf("eventstore/postgres: %s stream %q: %w", op, stream, err)
}

func (s *Store) appendTx(ctx context.Context, tx pgx.Tx, stream string, expected eventstore.Expected, evs []*event.Event) (eventstore.AppendResult, error) {
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.ID
	}
	// Taking the transaction id before any position is what lets ReadAll
	// find every holder of a position in the list of open transactions.
	// The upsert locks the stream's row until the transaction ends.
	b := &pgx.Batch{}
	b.Queue("SELECT pg_current_xact_id()")
	b.Queue(fmt.Sprintf(`INSERT INTO %s AS s (stream) VALUES ($1)
ON CONFLICT (stream) DO UPDATE SET stream = s.stream RETURNING version, tombstoned`, s.t.streams), stream)
	b.Queue(fmt.Sprintf(`SELECT event_id FROM %s WHERE stream = $1 AND event_id = ANY($2)`, s.t.events), stream, ids)
	br := tx.SendBatch(ctx, b)
	var (
		version    uint64
		tombstoned bool
		dups       = map[string]struct{}{}
	)
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return eventstore.AppendResult{}, err
	}
	if err := br.QueryRow().Scan(&version, &tombstoned); err != nil {
		_ = br.Close()
		return eventstore.AppendResult{}, err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return eventstore.AppendResult{}, err
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			_ = br.Close()
			return eventstore.AppendResult{}, err
		}
		dups[id] = struct{}{}
	}
	rows.Close()
	if err := br.Close(); err != nil {
		return eventstore.AppendResult{}, err
	}
	if tombstoned {
		return eventstore.AppendResult{}, fmt.Errorf("append to stream %q: %w", stream, eventstore.ErrDeleted)
	}
	if len(dups) > 0 {
		fresh := evs[:0]
		for _, e := range evs {
			if _, dup := dups[e.ID]; !dup {
				fresh = append(fresh, e)
			}
		}
		if len(fresh) == 0 {
			return eventstore.AppendResult{Version: version}, nil
		}
		evs = fresh
	}
	if err := expected.Check(stream, version); err != nil {
		return eventstore.AppendResult{}, err
	}
	if len(evs) == 0 {
		return eventstore.AppendResult{Version: version}, nil
	}
	n := len(evs)
	vers := make([]int64, n)
	eids := make([]string, n)
	types := make([]string, n)
	attrs := make([]map[string]string, n)
	data := make([][]byte, n)
	for i, e := range evs {
		version++
		e.Sequence = version
		vers[i], eids[i], types[i], data[i] = int64(version), e.ID, e.Type, e.Data
		h := make(map[string]string, event.NATS.HeaderCount(e))
		event.NATS.Encode(e, h)
		attrs[i] = h
	}
	var last int64
	err = tx.QueryRow(ctx, fmt.Sprintf(`
WITH ins AS (
	INSERT INTO %[1]s (stream, version, event_id, type, attrs, data)
	SELECT $1, v, i, t, a, d FROM unnest($2::bigint[], $3::text[], $4::text[], $5::jsonb[], $6::bytea[]) AS u(v, i, t, a, d)
	ORDER BY v
	RETURNING position
), upd AS (
	UPDATE %[2]s SET version = $7 WHERE stream = $1
)
SELECT max(position) FROM ins`, s.t.events, s.t.streams), stream, vers, eids, types, attrs, data, int64(version)).Scan(&last)
	if err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" {
			return eventstore.AppendResult{}, fmt.Errorf("stream %q: concurrent append of the same event: %w", stream, err)
		}
		return eventstore.AppendResult{}, err
	}
	return eventstore.AppendResult{Version: version, Position: uint64(last), Written: n}, nil
}

type streamRow struct {
	version uint64
	meta    eventstore.Metadata
	found   bool
}

func (s *Store) stream(ctx context.Context, stream string) (streamRow, error) {
	var (
		r     streamRow
		ageUS int64
	)
	err := s.pool.QueryRow(ctx, fmt.Sprintf(`SELECT version, max_age_us, max_count, truncate_before, tombstoned FROM %s WHERE stream = $1`, s.t.streams), stream).
		Scan(&r.version, &ageUS, &r.meta.MaxCount, &r.meta.TruncateBefore, &r.meta.Tombstoned)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, nil
	}
	if err != nil {
		return r, err
	}
	r.found = true
	r.meta.MaxAge = time.Duration(ageUS) * time.Microsecond
	return r, nil
}

func decode(stream string, pos, version int64, attrs map[string]string, data []byte, recorded time.Time) (*eventstore.Record, error) {
	e, err := event.NATS.Decode(attrs, data)
	if err != nil {
		return nil, fmt.Errorf("eventstore/postgres: stream %q version %d: stored event does not decode: %w", stream, version, err)
	}
	return &eventstore.Record{Stream: stream, Version: uint64(version), Position: uint64(pos), Recorded: recorded, Event: e}, nil
}

// Load implements eventstore.Store.
func (s *Store) Load(ctx context.Context, stream string, after uint64) iter.Seq2[*eventstore.Record, error] {
	return func(yield func(*eventstore.Record, error) bool) {
		if err := eventstore.ValidateStream(stream); err != nil {
			yield(nil, err)
			return
		}
		st, err := s.stream(ctx, stream)
		if err != nil {
			yield(nil, wrap("load", stream, err))
			return
		}
		if st.meta.Tombstoned {
			yield(nil, fmt.Errorf("load stream %q: %w", stream, eventstore.ErrDeleted))
			return
		}
		if !st.found {
			return
		}
		from := max(after+1, st.meta.FirstVisible(st.version))
		rows, err := s.pool.Query(ctx, fmt.Sprintf(`SELECT position, version, attrs, data, recorded_at FROM %s
WHERE stream = $1 AND version >= $2 ORDER BY version`, s.t.events), stream, int64(from))
		if err != nil {
			yield(nil, wrap("load", stream, err))
			return
		}
		defer rows.Close()
		now := time.Now()
		for rows.Next() {
			var (
				pos, ver int64
				attrs    storedAttrs
				data     []byte
				rec      time.Time
			)
			if err := rows.Scan(&pos, &ver, &attrs, &data, &rec); err != nil {
				yield(nil, wrap("load", stream, err))
				return
			}
			if !st.meta.Visible(uint64(ver), rec, st.version, now) {
				continue
			}
			r, err := decode(stream, pos, ver, attrs, data, rec)
			if !yield(r, err) || err != nil {
				return
			}
		}
		if err := rows.Err(); err != nil {
			yield(nil, wrap("load", stream, err))
		}
	}
}

// Last implements eventstore.Store.
func (s *Store) Last(ctx context.Context, stream string) (*eventstore.Record, error) {
	if err := eventstore.ValidateStream(stream); err != nil {
		return nil, err
	}
	st, err := s.stream(ctx, stream)
	if err != nil {
		return nil, wrap("last event of", stream, err)
	}
	if st.meta.Tombstoned {
		return nil, fmt.Errorf("last event of stream %q: %w", stream, eventstore.ErrDeleted)
	}
	var (
		pos, ver int64
		attrs    storedAttrs
		data     []byte
		rec      time.Time
	)
	err = s.pool.QueryRow(ctx, fmt.Sprintf(`SELECT position, version, attrs, data, recorded_at FROM %s
WHERE stream = $1 ORDER BY version DESC LIMIT 1`, s.t.events), stream).Scan(&pos, &ver, &attrs, &data, &rec)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && !st.meta.Visible(uint64(ver), rec, st.version, time.Now())) {
		return nil, fmt.Errorf("last event of stream %q: %w", stream, eventstore.ErrNotFound)
	}
	if err != nil {
		return nil, wrap("last event of", stream, err)
	}
	return decode(stream, pos, ver, attrs, data, rec)
}

// Info implements eventstore.Store.
func (s *Store) Info(ctx context.Context, stream string) (eventstore.StreamInfo, error) {
	if err := eventstore.ValidateStream(stream); err != nil {
		return eventstore.StreamInfo{}, err
	}
	st, err := s.stream(ctx, stream)
	if err != nil {
		return eventstore.StreamInfo{}, wrap("info of", stream, err)
	}
	return eventstore.StreamInfo{Stream: stream, Version: st.version, Metadata: st.meta}, nil
}

// SetMetadata implements eventstore.Store.
func (s *Store) SetMetadata(ctx context.Context, stream string, meta eventstore.Metadata) error {
	if err := eventstore.ValidateStream(stream); err != nil {
		return err
	}
	if meta.Tombstoned {
		return fmt.Errorf("%w: set metadata of stream %q: use Tombstone to tombstone a stream", eventstore.ErrInvalid, stream)
	}
	if err := meta.Validate(); err != nil {
		return err
	}
	return s.updateStream(ctx, "set metadata of", stream, `max_age_us = $2, max_count = $3, truncate_before = $4`,
		meta.MaxAge.Microseconds(), int64(meta.MaxCount), int64(meta.TruncateBefore))
}

// Delete implements eventstore.Store.
func (s *Store) Delete(ctx context.Context, stream string) error {
	if err := eventstore.ValidateStream(stream); err != nil {
		return err
	}
	return s.updateStream(ctx, "delete", stream, `truncate_before = s.version + 1`)
}

// Tombstone implements eventstore.Store.
func (s *Store) Tombstone(ctx context.Context, stream string) error {
	if err := eventstore.ValidateStream(stream); err != nil {
		return err
	}
	return s.updateStream(ctx, "tombstone", stream, `tombstoned = true`)
}

// updateStream applies set to the stream's row, creating it if needed,
// unless the stream is tombstoned.
func (s *Store) updateStream(ctx context.Context, op, stream, set string, args ...any) error {
	// Insert the row when it is missing, then update it: two statements,
	// so the update sees the row whichever transaction inserted it.
	if _, err := s.pool.Exec(ctx, fmt.Sprintf(`INSERT INTO %s (stream) VALUES ($1) ON CONFLICT (stream) DO NOTHING`, s.t.streams), stream); err != nil {
		return wrap(op, stream, err)
	}
	var ok bool
	err := s.pool.QueryRow(ctx, fmt.Sprintf(`UPDATE %s AS s SET %s WHERE stream = $1 AND NOT tombstoned RETURNING true`, s.t.streams, set),
		append([]any{stream}, args...)...).Scan(&ok)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s stream %q: %w", op, stream, eventstore.ErrDeleted)
	}
	if err != nil {
		return wrap(op, stream, err)
	}
	return nil
}

// ReadAll implements eventstore.Store. It returns every event committed
// before it was called, and waits for the transactions open at that
// moment to end first (see the package documentation).
func (s *Store) ReadAll(ctx context.Context, after uint64) iter.Seq2[*eventstore.Record, error] {
	return func(yield func(*eventstore.Record, error) bool) {
		horizon, err := s.Horizon(ctx)
		if err != nil {
			yield(nil, err)
			return
		}
		pos := after
		for pos < horizon {
			rows, err := s.pool.Query(ctx, fmt.Sprintf(`SELECT position, stream, version, attrs, data, recorded_at FROM %s
WHERE position > $1 AND position <= $2 ORDER BY position LIMIT %d`, s.t.events, pageSize), int64(pos), int64(horizon))
			if err != nil {
				yield(nil, fmt.Errorf("eventstore/postgres: read all after %d: %w", pos, err))
				return
			}
			n := 0
			for rows.Next() {
				var (
					p, ver int64
					stream string
					attrs  storedAttrs
					data   []byte
					rec    time.Time
				)
				if err := rows.Scan(&p, &stream, &ver, &attrs, &data, &rec); err != nil {
					rows.Close()
					yield(nil, fmt.Errorf("eventstore/postgres: read all after %d: %w", pos, err))
					return
				}
				n++
				pos = uint64(p)
				r, err := decode(stream, p, ver, attrs, data, rec)
				if !yield(r, err) || err != nil {
					rows.Close()
					return
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				yield(nil, fmt.Errorf("eventstore/postgres: read all after %d: %w", pos, err))
				return
			}
			if n < pageSize {
				break
			}
		}
	}
}

// Horizon returns the highest position below which every transaction has
// ended, so that no event can still appear at or below it: it reads the
// sequence, takes a transaction id (committed at once, asynchronously,
// writing nothing), and waits until every older transaction has ended.
func (s *Store) Horizon(ctx context.Context) (uint64, error) {
	var (
		last   int64
		called bool
		mark   string
	)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue("SET LOCAL synchronous_commit TO off")
		b.Queue(fmt.Sprintf(`SELECT last_value, is_called FROM %s`, s.t.seq)).QueryRow(func(r pgx.Row) error { return r.Scan(&last, &called) })
		// Every append holding a position up to last took its
		// transaction id before that position, so before this one.
		b.Queue(`SELECT pg_current_xact_id()::text`).QueryRow(func(r pgx.Row) error { return r.Scan(&mark) })
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return 0, fmt.Errorf("eventstore/postgres: read position sequence: %w", err)
	}
	if !called {
		return 0, nil
	}
	var t *time.Ticker
	for {
		// The oldest transaction still running, in this statement's
		// snapshot and so in every later one.
		var ended bool
		err := s.pool.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot()) > $1::xid8`, mark).Scan(&ended)
		if err != nil {
			return 0, fmt.Errorf("eventstore/postgres: wait for open transactions: %w", err)
		}
		if ended {
			return uint64(last), nil
		}
		if t == nil {
			t = time.NewTicker(s.poll)
			defer t.Stop()
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-t.C:
		}
	}
}

// LastPosition returns the position of the last committed event, 0 when
// there is none. Unlike Horizon it does not wait for open transactions:
// an append still open may commit below it.
func (s *Store) LastPosition(ctx context.Context) (uint64, error) {
	var last *int64
	if err := s.pool.QueryRow(ctx, fmt.Sprintf(`SELECT max(position) FROM %s`, s.t.events)).Scan(&last); err != nil {
		return 0, fmt.Errorf("eventstore/postgres: last position: %w", err)
	}
	if last == nil {
		return 0, nil
	}
	return uint64(*last), nil
}
