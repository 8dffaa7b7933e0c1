package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// Postgres is the audit store in PostgreSQL, for deployments that outgrow
// one SQLite file or want the audit log beside their other data. Rows are
// written with COPY.
type Postgres struct {
	pool *pgxpool.Pool
	db   *sql.DB
}

var _ Store = (*Postgres)(nil)

// PostgresOption configures OpenPostgres.
type PostgresOption func(*pgConfig)

type pgConfig struct {
	schema string
}

// WithSchema keeps the audit tables in schema (created if missing).
// Default "public".
func WithSchema(schema string) PostgresOption { return func(c *pgConfig) { c.schema = schema } }

const postgresSchema = `
CREATE TABLE IF NOT EXISTS audit_events (
	n              BIGSERIAL PRIMARY KEY,
	topic          TEXT     NOT NULL,
	seq            BIGINT   NOT NULL,
	stored_ns      BIGINT   NOT NULL,
	time_ns        BIGINT   NOT NULL,
	id             TEXT     NOT NULL,
	type           TEXT     NOT NULL,
	source         TEXT     NOT NULL,
	subject        TEXT     NOT NULL,
	correlation_id TEXT     NOT NULL,
	causation_id   TEXT     NOT NULL,
	content_type   TEXT     NOT NULL,
	dead_letter    SMALLINT NOT NULL,
	redrives       INTEGER  NOT NULL,
	payload        BYTEA,
	payload_size   INTEGER  NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_events_correlation ON audit_events (correlation_id, time_ns, n) WHERE correlation_id <> '';
CREATE INDEX IF NOT EXISTS audit_events_subject ON audit_events (subject, time_ns, n) WHERE subject <> '';
CREATE INDEX IF NOT EXISTS audit_events_type ON audit_events (type, time_ns, n);
CREATE TABLE IF NOT EXISTS audit_positions (
	stream     TEXT   PRIMARY KEY,
	created_ns BIGINT NOT NULL,
	seq        BIGINT NOT NULL
);
`

// OpenPostgres connects to the database at url (a postgres:// URL or a
// key=value DSN) and creates the audit tables if missing.
func OpenPostgres(ctx context.Context, url string, opts ...PostgresOption) (*Postgres, error) {
	c := pgConfig{schema: "public"}
	for _, o := range opts {
		o(&c)
	}
	if c.schema == "" {
		return nil, errors.New("audit: postgres schema is empty")
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("audit: postgres url: %w", err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = c.schema
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("audit: postgres: %w", err)
	}
	stmts := postgresSchema
	if c.schema != "public" {
		stmts = "CREATE SCHEMA IF NOT EXISTS " + pgx.Identifier{c.schema}.Sanitize() + ";" + stmts
	}
	if _, err := pool.Exec(ctx, stmts); err != nil {
		pool.Close()
		return nil, fmt.Errorf("audit: postgres: create schema: %w", err)
	}
	return &Postgres{pool: pool, db: stdlib.OpenDBFromPool(pool)}, nil
}

var pgCols = strings.Split(strings.ReplaceAll(insertCols, " ", ""), ",")

// Write implements Store.
func (p *Postgres) Write(ctx context.Context, recs []Record, pos []Position) error {
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("audit: write: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	row := make([]any, 0, len(pgCols))
	_, err = tx.CopyFrom(ctx, pgx.Identifier{"audit_events"}, pgCols, pgx.CopyFromSlice(len(recs), func(i int) ([]any, error) {
		row = rowArgs(row[:0], &recs[i])
		return row, nil
	}))
	if err != nil {
		return fmt.Errorf("audit: write: %w", err)
	}
	var b pgx.Batch
	for _, ps := range pos {
		b.Queue(`INSERT INTO audit_positions (stream, created_ns, seq) VALUES ($1, $2, $3)
			ON CONFLICT (stream) DO UPDATE SET created_ns = excluded.created_ns, seq = excluded.seq`,
			ps.Stream, ps.Created.UnixNano(), int64(ps.Seq))
	}
	if b.Len() > 0 {
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return fmt.Errorf("audit: write positions: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("audit: write: commit: %w", err)
	}
	return nil
}

// Positions implements Store.
func (p *Postgres) Positions(ctx context.Context) (map[string]Position, error) {
	return positions(ctx, p.db)
}

// Query implements Store.
func (p *Postgres) Query(ctx context.Context, q Query) ([]Record, error) {
	return query(ctx, p.db, q, func(i int) string { return "$" + strconv.Itoa(i) })
}

// Close implements Store.
func (p *Postgres) Close() error {
	err := p.db.Close()
	p.pool.Close()
	return err
}
