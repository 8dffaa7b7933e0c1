package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver, no cgo
)

// SQLite is the audit store in a SQLite file (WAL mode). It is the
// embedded default: <data-dir>/audit.db.
type SQLite struct {
	db  *sql.DB
	ins *sql.Stmt // inserts sqliteRowsPerInsert rows
}

var _ Store = (*SQLite)(nil)

const sqliteSchema = `
CREATE TABLE IF NOT EXISTS audit_events (
	n              INTEGER PRIMARY KEY,
	topic          TEXT    NOT NULL,
	seq            INTEGER NOT NULL,
	stored_ns      INTEGER NOT NULL,
	time_ns        INTEGER NOT NULL,
	id             TEXT    NOT NULL,
	type           TEXT    NOT NULL,
	source         TEXT    NOT NULL,
	subject        TEXT    NOT NULL,
	correlation_id TEXT    NOT NULL,
	causation_id   TEXT    NOT NULL,
	content_type   TEXT    NOT NULL,
	dead_letter    INTEGER NOT NULL,
	redrives       INTEGER NOT NULL,
	payload        BLOB,
	payload_size   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_events_correlation ON audit_events (correlation_id, time_ns) WHERE correlation_id <> '';
CREATE INDEX IF NOT EXISTS audit_events_subject ON audit_events (subject, time_ns) WHERE subject <> '';
CREATE INDEX IF NOT EXISTS audit_events_type ON audit_events (type, time_ns);
CREATE TABLE IF NOT EXISTS audit_positions (
	stream     TEXT    PRIMARY KEY,
	created_ns INTEGER NOT NULL,
	seq        INTEGER NOT NULL
);
`

// OpenSQLite opens (creating if needed) the audit store at path.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	if path == "" {
		return nil, errors.New("audit: sqlite path is empty")
	}
	q := url.Values{}
	// Statement journals and temporary b-trees stay in memory; a larger
	// page cache and rarer checkpoints make the indexer write fewer pages
	// per row.
	for _, p := range []string{"journal_mode(WAL)", "synchronous(NORMAL)", "busy_timeout(10000)",
		"temp_store(MEMORY)", "cache_size(-32768)", "wal_autocheckpoint(10000)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("audit: open %s: %w", path, err)
	}
	// One writer at a time; readers run beside it in WAL mode.
	db.SetMaxOpenConns(4)
	if _, err := db.ExecContext(ctx, sqliteSchema); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("audit: open %s: create schema: %w", path, err)
	}
	ins, err := db.PrepareContext(ctx, sqliteInsertFull)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("audit: open %s: %w", path, err)
	}
	return &SQLite{db: db, ins: ins}, nil
}

// sqliteRowsPerInsert rows go in one INSERT statement: fewer statement
// executions per batch (SQLite allows 32766 parameters).
const sqliteRowsPerInsert = 64

const insertCols = "topic, seq, stored_ns, time_ns, id, type, source, subject, correlation_id, causation_id, content_type, dead_letter, redrives, payload, payload_size"

func rowArgs(args []any, r *Record) []any {
	var payload any
	if r.Payload != nil {
		payload = r.Payload
	}
	dl := 0
	if r.DeadLetter {
		dl = 1
	}
	return append(args, r.Topic, int64(r.Seq), r.Stored.UnixNano(), r.Time.UnixNano(), r.ID, r.Type, r.Source, r.Subject,
		r.CorrelationID, r.CausationID, r.ContentType, dl, r.Redrives, payload, r.PayloadSize)
}

func sqliteInsert(rows int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO audit_events (" + insertCols + ") VALUES ")
	for i := range rows {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
	}
	return b.String()
}

var sqliteInsertFull = sqliteInsert(sqliteRowsPerInsert)

// Write implements Store.
func (s *SQLite) Write(ctx context.Context, recs []Record, pos []Position) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("audit: write: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	args := make([]any, 0, sqliteRowsPerInsert*15)
	for len(recs) > 0 {
		n := min(len(recs), sqliteRowsPerInsert)
		args = args[:0]
		for i := range n {
			args = rowArgs(args, &recs[i])
		}
		if n == sqliteRowsPerInsert {
			_, err = tx.StmtContext(ctx, s.ins).ExecContext(ctx, args...)
		} else {
			_, err = tx.ExecContext(ctx, sqliteInsert(n), args...)
		}
		if err != nil {
			return fmt.Errorf("audit: write: %w", err)
		}
		recs = recs[n:]
	}
	for _, p := range pos {
		if _, err := tx.ExecContext(ctx, `INSERT INTO audit_positions (stream, created_ns, seq) VALUES (?, ?, ?)
			ON CONFLICT (stream) DO UPDATE SET created_ns = excluded.created_ns, seq = excluded.seq`,
			p.Stream, p.Created.UnixNano(), int64(p.Seq)); err != nil {
			return fmt.Errorf("audit: write position of %q: %w", p.Stream, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("audit: write: commit: %w", err)
	}
	return nil
}

// Positions implements Store.
func (s *SQLite) Positions(ctx context.Context) (map[string]Position, error) {
	return positions(ctx, s.db)
}

func positions(ctx context.Context, db *sql.DB) (map[string]Position, error) {
	rows, err := db.QueryContext(ctx, `SELECT stream, created_ns, seq FROM audit_positions`)
	if err != nil {
		return nil, fmt.Errorf("audit: positions: %w", err)
	}
	defer rows.Close()
	out := map[string]Position{}
	for rows.Next() {
		var p Position
		var created, seq int64
		if err := rows.Scan(&p.Stream, &created, &seq); err != nil {
			return nil, fmt.Errorf("audit: positions: %w", err)
		}
		p.Created, p.Seq = time.Unix(0, created).UTC(), uint64(seq)
		out[p.Stream] = p
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit: positions: %w", err)
	}
	return out, nil
}

// Query implements Store.
func (s *SQLite) Query(ctx context.Context, q Query) ([]Record, error) {
	return query(ctx, s.db, q, func(int) string { return "?" })
}

func query(ctx context.Context, db *sql.DB, q Query, ph func(int) string) ([]Record, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	cond, args := where(q, ph)
	payload := "payload"
	if q.NoPayload {
		payload = "NULL"
	}
	args = append(args, q.Limit)
	stmt := fmt.Sprintf(`SELECT n, topic, seq, stored_ns, time_ns, id, type, source, subject, correlation_id, causation_id,
		content_type, dead_letter, redrives, %s, payload_size FROM audit_events WHERE %s ORDER BY time_ns, n LIMIT %s`,
		payload, cond, ph(len(args)))
	rows, err := db.QueryContext(ctx, stmt, args...)
	if err != nil {
		return nil, fmt.Errorf("audit: query: %w", err)
	}
	defer rows.Close()
	out := []Record{}
	for rows.Next() {
		var (
			r                           Record
			n, seq, stored, tns, dl, rd int64
			size                        int64
			data                        []byte
		)
		if err := rows.Scan(&n, &r.Topic, &seq, &stored, &tns, &r.ID, &r.Type, &r.Source, &r.Subject, &r.CorrelationID,
			&r.CausationID, &r.ContentType, &dl, &rd, &data, &size); err != nil {
			return nil, fmt.Errorf("audit: query: %w", err)
		}
		r.Seq, r.Stored, r.Time = uint64(seq), time.Unix(0, stored).UTC(), time.Unix(0, tns).UTC()
		r.DeadLetter, r.Redrives, r.PayloadSize = dl != 0, int(rd), int(size)
		if data != nil {
			r.Payload = data
		}
		r.Cursor = formatCursor(tns, n)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit: query: %w", err)
	}
	return out, nil
}

// Close implements Store.
func (s *SQLite) Close() error {
	_ = s.ins.Close()
	return s.db.Close()
}
