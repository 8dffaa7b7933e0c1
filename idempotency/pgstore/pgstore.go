// Package pgstore is an idempotency.Store on PostgreSQL: an inbox table
// with one row per key, which a handler can also write inside its own
// transaction so that its business change and the record that the event
// was handled commit or roll back together.
//
// The table (default herald_inbox):
//
//	key          text PRIMARY KEY      -- the idempotency key
//	state        text NOT NULL         -- 'claimed' or 'done'
//	owner        text NOT NULL         -- the Store that wrote the row
//	expires_at   timestamptz NOT NULL  -- end of the lease, or of the completion's TTL
//	completed_at timestamptz           -- when the key was completed
//
// All times come from the database server's clock. Expired rows are
// ignored when read and overwritten by the next claim; Purge deletes them.
//
// Two ways to use it:
//
//   - As an idempotency.Store for the consumer runtime (Claim with a lease,
//     Complete, Release), like every other store.
//   - Transactionally: ClaimTx and CompleteTx inside the handler's own
//     transaction, or Once, which wraps both around a function. The row
//     lock taken by ClaimTx makes concurrent handlers of one key wait for
//     each other, and the completion commits with the business write, so
//     the effect happens exactly once per key even if the process dies
//     between commit and acknowledgement.
//
// Keys must be valid UTF-8 without NUL bytes (PostgreSQL text) and at most
// MaxKeyBytes long (a B-tree index entry must fit in a third of a page).
package pgstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/idempotency"
)

// DefaultTable is the inbox table's name unless WithTable says otherwise.
const DefaultTable = "herald_inbox"

// MaxKeyBytes is the longest key the store accepts.
const MaxKeyBytes = 2048

// maxAttempts bounds how often Claim re-reads a key that changed between
// its write attempt and its read.
const maxAttempts = 8

// Store is an idempotency.Store on a PostgreSQL inbox table. It is safe
// for concurrent use. Each Store has its own owner identity: its Release
// drops only claims it made. The pool stays the caller's to close.
type Store struct {
	pool    *pgxpool.Pool
	table   string // as given
	ident   string // quoted for SQL
	index   string // quoted name of the expires_at index
	owner   string
	migrate bool
	sql     queries
}

type queries struct {
	claim, complete, release, purge, claimTxInsert, claimTxLock string
}

// Option configures a Store.
type Option func(*Store)

// WithTable sets the inbox table's name, optionally schema-qualified
// ("billing.inbox"). Each part is a letter or underscore followed by up
// to 47 letters, digits or underscores; it is quoted, so case is kept.
// Default DefaultTable.
func WithTable(name string) Option { return func(s *Store) { s.table = name } }

// WithMigrate makes New create the table and its index if they do not
// exist, as Migrate does. Default off: New then only checks the table
// exists.
func WithMigrate() Option { return func(s *Store) { s.migrate = true } }

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,47}$`)

// New returns a Store on the inbox table in pool's database. It creates
// the table when WithMigrate is given, and otherwise fails if it is
// missing.
func New(ctx context.Context, pool *pgxpool.Pool, opts ...Option) (*Store, error) {
	if pool == nil {
		return nil, errors.New("pgstore: pool is nil")
	}
	s := &Store{pool: pool, table: DefaultTable, owner: rand.Text()}
	for _, o := range opts {
		o(s)
	}
	parts := strings.Split(s.table, ".")
	if len(parts) > 2 {
		return nil, fmt.Errorf("pgstore: table %q: want name or schema.name", s.table)
	}
	for _, p := range parts {
		if !identRE.MatchString(p) {
			return nil, fmt.Errorf("pgstore: table %q: part %q must be a letter or underscore followed by up to 47 letters, digits or underscores", s.table, p)
		}
	}
	s.ident = pgx.Identifier(parts).Sanitize()
	s.index = pgx.Identifier{parts[len(parts)-1] + "_expires_at_idx"}.Sanitize()
	s.sql = buildQueries(s.ident)
	if s.migrate {
		if err := s.Migrate(ctx); err != nil {
			return nil, err
		}
		return s, nil
	}
	var exists bool
	if err := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", s.ident).Scan(&exists); err != nil {
		return nil, fmt.Errorf("pgstore: table %q: %w", s.table, err)
	}
	if !exists {
		return nil, fmt.Errorf("pgstore: table %q does not exist: call Migrate, or pass WithMigrate to New", s.table)
	}
	return s, nil
}

// Migrate creates the inbox table and its index on expires_at if they do
// not exist. Concurrent calls, from any process, are safe.
func (s *Store) Migrate(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// CREATE ... IF NOT EXISTS races with itself; serialise creators.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext($1))", "herald-inbox:"+s.ident); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, fmt.Sprintf(`
CREATE TABLE IF NOT EXISTS %[1]s (
	key          text PRIMARY KEY,
	state        text NOT NULL CHECK (state IN ('claimed', 'done')),
	owner        text NOT NULL DEFAULT '',
	expires_at   timestamptz NOT NULL,
	completed_at timestamptz
);
CREATE INDEX IF NOT EXISTS %[2]s ON %[1]s (expires_at)`, s.ident, s.index))
		return err
	})
	if err != nil {
		return fmt.Errorf("pgstore: migrate table %q: %w", s.table, err)
	}
	return nil
}

// Table returns the inbox table's name as configured.
func (s *Store) Table() string { return s.table }

func buildQueries(t string) queries {
	const now = "statement_timestamp()"
	return queries{
		// Insert, or overwrite an expired row; otherwise report the live
		// row's state. The report reads the statement's snapshot, which
		// misses a row committed while the insert waited for it: then
		// nothing comes back and Claim asks again.
		claim: fmt.Sprintf(`
WITH won AS (
	INSERT INTO %[1]s AS i (key, state, owner, expires_at)
	VALUES ($1, 'claimed', $2, %[2]s + $3::bigint * interval '1 microsecond')
	ON CONFLICT (key) DO UPDATE
		SET state = 'claimed', owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at, completed_at = NULL
		WHERE i.expires_at <= %[2]s
	RETURNING ''::text AS state
)
SELECT state FROM won
UNION ALL
SELECT state FROM %[1]s WHERE key = $1 AND expires_at > %[2]s AND NOT EXISTS (SELECT FROM won)`, t, now),
		complete: fmt.Sprintf(`
INSERT INTO %[1]s AS i (key, state, owner, expires_at, completed_at)
VALUES ($1, 'done', $2, %[2]s + $3::bigint * interval '1 microsecond', %[2]s)
ON CONFLICT (key) DO UPDATE
	SET state = 'done', owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at, completed_at = EXCLUDED.completed_at`, t, now),
		release: fmt.Sprintf(`DELETE FROM %s WHERE key = $1 AND state = 'claimed' AND owner = $2`, t),
		// Batches keep each delete short; SKIP LOCKED passes over rows a
		// running transaction (Once on an expired key) holds.
		purge: fmt.Sprintf(`
DELETE FROM %[1]s WHERE key IN (
	SELECT key FROM %[1]s WHERE expires_at <= %[2]s LIMIT $1 FOR UPDATE SKIP LOCKED)`, t, now),
		// An already expired claim: if the transaction commits without
		// CompleteTx, the row blocks nobody.
		claimTxInsert: fmt.Sprintf(`
INSERT INTO %[1]s (key, state, owner, expires_at) VALUES ($1, 'claimed', $2, %[2]s)
ON CONFLICT (key) DO NOTHING`, t, now),
		claimTxLock: fmt.Sprintf(`
SELECT state = 'done' AND expires_at > %[2]s FROM %[1]s WHERE key = $1 FOR UPDATE`, t, now),
	}
}

var _ idempotency.Store = (*Store)(nil)

// Claim implements idempotency.Store in one statement: insert the row, or
// take over an expired one, or report the live row's state. Leases are
// rounded up to whole microseconds.
func (s *Store) Claim(ctx context.Context, key string, lease time.Duration) error {
	if err := check(ctx, "claim", key, "lease", lease); err != nil {
		return err
	}
	for range maxAttempts {
		var state string
		err := s.pool.QueryRow(ctx, s.sql.claim, key, s.owner, micros(lease)).Scan(&state)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			continue // the row changed under the statement: ask again
		case err != nil:
			return fmt.Errorf("pgstore: claim %q: %w", key, err)
		case state == "":
			return nil
		case state == "done":
			return idempotency.ErrDuplicate
		default:
			return idempotency.ErrInProgress
		}
	}
	return idempotency.ErrInProgress
}

// Complete implements idempotency.Store. It records the key as done
// whatever its row held, even when this store's claim had expired or
// another store had taken it over: the work is done, and recording it
// keeps the next redelivery from repeating it.
func (s *Store) Complete(ctx context.Context, key string, ttl time.Duration) error {
	if err := check(ctx, "complete", key, "ttl", ttl); err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, s.sql.complete, key, s.owner, micros(ttl)); err != nil {
		return fmt.Errorf("pgstore: complete %q: %w", key, err)
	}
	return nil
}

// Release implements idempotency.Store. It deletes the row only while it
// holds this store's claim.
func (s *Store) Release(ctx context.Context, key string) error {
	if err := check(ctx, "release", key, "", 0); err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, s.sql.release, key, s.owner); err != nil {
		return fmt.Errorf("pgstore: release %q: %w", key, err)
	}
	return nil
}

// purgeBatch is how many rows one DELETE of Purge removes at most.
const purgeBatch = 10_000

// Purge deletes expired rows, in batches, and returns how many it
// deleted. Run it now and then (hourly, say); correctness does not depend
// on it, only the table's size.
func (s *Store) Purge(ctx context.Context) (int64, error) {
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, s.sql.purge, purgeBatch)
		if err != nil {
			return total, fmt.Errorf("pgstore: purge table %q: %w", s.table, err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < purgeBatch {
			return total, nil
		}
	}
}

// ClaimTx locks key's row inside tx, creating it if needed, and returns
// ErrDuplicate if the key is done (and its TTL not over). Otherwise the
// caller does its work in tx, calls CompleteTx and commits; a rollback
// leaves the row as it was.
//
// The lock is held until tx ends, so a second transaction claiming the
// same key waits, then sees the first one's outcome: done if it committed
// with CompleteTx. A live lease from Claim does not stop ClaimTx: the
// lease is how the consumer runtime keeps redeliveries away while this
// transaction runs, and the row lock already excludes other transactions.
//
// Use it at READ COMMITTED, PostgreSQL's default. Under REPEATABLE READ
// or SERIALIZABLE a concurrent completion of the same key makes it fail
// with a serialization error, which the caller retries.
func (s *Store) ClaimTx(ctx context.Context, tx pgx.Tx, key string) error {
	if err := check(ctx, "claim", key, "", 0); err != nil {
		return err
	}
	if tx == nil {
		return fmt.Errorf("pgstore: claim %q: transaction is nil", key)
	}
	// One round trip: each statement of the batch takes its own snapshot,
	// so the SELECT sees the row whoever inserted it.
	b := &pgx.Batch{}
	b.Queue(s.sql.claimTxInsert, key, s.owner)
	var done bool
	b.Queue(s.sql.claimTxLock, key).QueryRow(func(row pgx.Row) error { return row.Scan(&done) })
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("pgstore: claim %q in transaction: %w", key, err)
	}
	if done {
		return idempotency.ErrDuplicate
	}
	return nil
}

// CompleteTx records key as done for ttl inside tx, so the record commits
// or rolls back with whatever else tx writes. Call it after the business
// write and before Commit; after ClaimTx, or on its own.
func (s *Store) CompleteTx(ctx context.Context, tx pgx.Tx, key string, ttl time.Duration) error {
	if err := check(ctx, "complete", key, "ttl", ttl); err != nil {
		return err
	}
	if tx == nil {
		return fmt.Errorf("pgstore: complete %q: transaction is nil", key)
	}
	if _, err := tx.Exec(ctx, s.sql.complete, key, s.owner, micros(ttl)); err != nil {
		return fmt.Errorf("pgstore: complete %q in transaction: %w", key, err)
	}
	return nil
}

// Once runs fn at most once per key among all callers whose transactions
// commit: in one transaction it claims key (ClaimTx), runs fn, records key
// as done for ttl (CompleteTx) and commits. It returns ErrDuplicate,
// without calling fn, if key is done; fn's error, after rolling back, if
// fn fails (a later Once runs fn again); or a database error. Concurrent
// calls for one key wait for each other.
func (s *Store) Once(ctx context.Context, key string, ttl time.Duration, fn func(tx pgx.Tx) error) error {
	if err := check(ctx, "once", key, "ttl", ttl); err != nil {
		return err
	}
	if fn == nil {
		return fmt.Errorf("pgstore: once %q: fn is nil", key)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("pgstore: once %q: begin: %w", key, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }() // no-op after Commit
	if err := s.ClaimTx(ctx, tx, key); err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		return err
	}
	if err := s.CompleteTx(ctx, tx, key, ttl); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("pgstore: once %q: commit: %w", key, err)
	}
	return nil
}

// micros rounds d up to whole microseconds, PostgreSQL's finest time.
func micros(d time.Duration) int64 {
	return int64((d + time.Microsecond - 1) / time.Microsecond)
}

// check validates the arguments: a key PostgreSQL can store and index, a
// positive duration (unless name is ""), a live context.
func check(ctx context.Context, op, key, name string, d time.Duration) error {
	switch {
	case key == "":
		return fmt.Errorf("pgstore: %s: empty key", op)
	case len(key) > MaxKeyBytes:
		return fmt.Errorf("pgstore: %s %.40q...: key is %d bytes, more than the %d allowed", op, key, len(key), MaxKeyBytes)
	case !utf8.ValidString(key):
		return fmt.Errorf("pgstore: %s %q: key is not valid UTF-8", op, key)
	case strings.IndexByte(key, 0) >= 0:
		return fmt.Errorf("pgstore: %s %q: key holds a NUL byte, which PostgreSQL text cannot", op, key)
	case name != "" && d <= 0:
		return fmt.Errorf("pgstore: %s %q: %s %v must be positive", op, key, name, d)
	}
	return ctx.Err()
}
