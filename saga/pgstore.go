package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultPGTable is PGStore's table unless given.
const DefaultPGTable = "herald_sagas"

// PGStore keeps instances in a PostgreSQL table, one row per instance
// with a version column: Update is an UPDATE ... WHERE version = the read
// one. It is safe for concurrent use; the pool stays the caller's.
type PGStore struct {
	pool  *pgxpool.Pool
	table string
	ident string
}

var pgIdentRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,47}$`)

// NewPGStore returns a store on table (DefaultPGTable if empty,
// optionally schema-qualified), creating it if it does not exist.
func NewPGStore(ctx context.Context, pool *pgxpool.Pool, table string) (*PGStore, error) {
	if pool == nil {
		return nil, errors.New("saga: pool is nil")
	}
	if table == "" {
		table = DefaultPGTable
	}
	parts := strings.Split(table, ".")
	if len(parts) > 2 {
		return nil, fmt.Errorf("saga: table %q: want name or schema.name", table)
	}
	for _, p := range parts {
		if !pgIdentRE.MatchString(p) {
			return nil, fmt.Errorf("saga: table %q: part %q must be a letter or underscore followed by up to 47 letters, digits or underscores", table, p)
		}
	}
	s := &PGStore{pool: pool, table: table, ident: pgx.Identifier(parts).Sanitize()}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext($1))", "herald-sagas-migrate:"+s.ident); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, fmt.Sprintf(`
CREATE TABLE IF NOT EXISTS %[1]s (
	id       text PRIMARY KEY,
	state    text NOT NULL,
	version  bigint NOT NULL,
	created  timestamptz NOT NULL,
	instance jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS %[2]s ON %[1]s (state, created)`, s.ident, pgx.Identifier{parts[len(parts)-1] + "_state_idx"}.Sanitize()))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("saga: create table %q: %w", table, err)
	}
	return s, nil
}

var _ Store = (*PGStore)(nil)

// Create implements Store.
func (s *PGStore) Create(ctx context.Context, in *Instance) error {
	b, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("saga: encode %q: %w", in.ID, err)
	}
	_, err = s.pool.Exec(ctx, "INSERT INTO "+s.ident+" (id, state, version, created, instance) VALUES ($1, $2, 1, $3, $4)", in.ID, string(in.State), in.Created, b)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return fmt.Errorf("%w: %q", ErrExists, in.ID)
	}
	if err != nil {
		return fmt.Errorf("saga: create %q: %w", in.ID, err)
	}
	in.Version = 1
	return nil
}

// Get implements Store.
func (s *PGStore) Get(ctx context.Context, id string) (*Instance, error) {
	var b []byte
	var v uint64
	err := s.pool.QueryRow(ctx, "SELECT instance, version FROM "+s.ident+" WHERE id = $1", id).Scan(&b, &v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("saga: get %q: %w", id, err)
	}
	var in Instance
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, fmt.Errorf("saga: decode %q: %w", id, err)
	}
	in.Version = v
	return &in, nil
}

// Update implements Store.
func (s *PGStore) Update(ctx context.Context, in *Instance) error {
	b, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("saga: encode %q: %w", in.ID, err)
	}
	tag, err := s.pool.Exec(ctx, "UPDATE "+s.ident+" SET state = $2, version = version + 1, instance = $3 WHERE id = $1 AND version = $4", in.ID, string(in.State), b, in.Version)
	if err != nil {
		return fmt.Errorf("saga: update %q: %w", in.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: %q at version %d", ErrConflict, in.ID, in.Version)
	}
	in.Version++
	return nil
}

// List implements Store.
func (s *PGStore) List(ctx context.Context, state State) ([]*Instance, error) {
	rows, err := s.pool.Query(ctx, "SELECT instance, version FROM "+s.ident+" WHERE $1 = '' OR state = $1 ORDER BY created, id", string(state))
	if err != nil {
		return nil, fmt.Errorf("saga: list: %w", err)
	}
	defer rows.Close()
	var out []*Instance
	for rows.Next() {
		var b []byte
		var in Instance
		if err := rows.Scan(&b, &in.Version); err != nil {
			return nil, fmt.Errorf("saga: list: %w", err)
		}
		if err := json.Unmarshal(b, &in); err != nil {
			return nil, fmt.Errorf("saga: list: decode: %w", err)
		}
		out = append(out, &in)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("saga: list: %w", err)
	}
	return out, nil
}
