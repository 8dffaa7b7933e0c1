package projection

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// stateColumns adds what tools read to a state table made before they
// existed.
const stateColumns = `ALTER TABLE ` + stateTable + `
	ADD COLUMN IF NOT EXISTS state text NOT NULL DEFAULT 'stopped',
	ADD COLUMN IF NOT EXISTS last_error text NOT NULL DEFAULT '',
	ADD COLUMN IF NOT EXISTS head bigint NOT NULL DEFAULT 0,
	ADD COLUMN IF NOT EXISTS lag bigint NOT NULL DEFAULT 0,
	ADD COLUMN IF NOT EXISTS lag_seconds double precision NOT NULL DEFAULT 0,
	ADD COLUMN IF NOT EXISTS heartbeat timestamptz,
	ADD COLUMN IF NOT EXISTS poll_ms bigint NOT NULL DEFAULT 0,
	ADD COLUMN IF NOT EXISTS rebuild_requested timestamptz,
	ADD COLUMN IF NOT EXISTS rebuild_started timestamptz,
	ADD COLUMN IF NOT EXISTS rebuild_ended timestamptz,
	ADD COLUMN IF NOT EXISTS rebuild_applied bigint NOT NULL DEFAULT 0,
	ADD COLUMN IF NOT EXISTS rebuild_position bigint NOT NULL DEFAULT 0,
	ADD COLUMN IF NOT EXISTS rebuild_target bigint NOT NULL DEFAULT 0,
	ADD COLUMN IF NOT EXISTS rebuild_error text NOT NULL DEFAULT ''`

// State says what is being done with a projection.
type State string

// States of a projection.
const (
	// StateRunning: a projector's Run keeps it up to date.
	StateRunning State = "running"
	// StateRebuilding: a rebuild fills a fresh table; the current one
	// keeps serving (and, under Run, being updated).
	StateRebuilding State = "rebuilding"
	// StateStopped: no projector runs it (Run returned, or its process
	// stopped sending heartbeats).
	StateStopped State = "stopped"
	// StateFailed: Run returned an error, in Status.LastError.
	StateFailed State = "failed"
)

// ErrNotFound is returned (wrapped) by Lookup and RequestRebuild for a
// projection that does not exist.
var ErrNotFound = errors.New("projection: not found")

// Status is a projection's state, as its projector last recorded it.
type Status struct {
	Name string `json:"name"`
	// Table is the table serving queries through the view Name.
	Table string `json:"table"`
	// Generation counts the projection's tables: 1, plus one per rebuild.
	Generation int64 `json:"generation"`
	// Checkpoint is the position of the last event applied.
	Checkpoint uint64 `json:"checkpoint"`
	// Head is the store's last position when the projector last looked
	// (0 for a store that cannot tell, see eventstore.Positioner).
	Head uint64 `json:"head"`
	// Lag is how many positions the projection was behind Head when it
	// last applied a batch; 0 once it has caught up.
	Lag uint64 `json:"lag"`
	// LagSeconds is the age of the last event applied while behind; 0
	// when caught up.
	LagSeconds float64 `json:"lag_seconds"`
	// State is what is being done: StateRunning, StateRebuilding,
	// StateStopped or StateFailed. A projector whose heartbeat is older
	// than ten polls (at least 5s) counts as stopped.
	State State `json:"state"`
	// LastError is why Run stopped, for StateFailed.
	LastError string `json:"last_error,omitempty"`
	// Heartbeat is when a projector last reported; zero if none ever ran.
	Heartbeat time.Time `json:"heartbeat,omitzero"`
	// Updated is when the checkpoint last moved.
	Updated time.Time `json:"updated"`
	// Rebuild is the last rebuild asked for or run, nil if none.
	Rebuild *RebuildStatus `json:"rebuild,omitempty"`
}

// RebuildStatus is the progress of a projection's last rebuild.
type RebuildStatus struct {
	// Requested is when RequestRebuild asked for a rebuild that has not
	// started yet; zero otherwise.
	Requested time.Time `json:"requested,omitzero"`
	// Started and Ended bound the last rebuild; Ended is zero while it
	// runs.
	Started time.Time `json:"started,omitzero"`
	Ended   time.Time `json:"ended,omitzero"`
	// Applied is how many events it has applied, up to Position, of the
	// Target the live projection was at (at least) when it started.
	Applied  uint64 `json:"applied"`
	Position uint64 `json:"position"`
	Target   uint64 `json:"target"`
	// Error is why it failed; empty while it runs and after a success.
	Error string `json:"error,omitempty"`
}

// Running reports whether the rebuild has started and not ended.
func (r *RebuildStatus) Running() bool {
	return r != nil && !r.Started.IsZero() && r.Ended.IsZero()
}

const statusColumns = `name, active, generation, checkpoint, updated_at, state, last_error, head, lag, lag_seconds,
	heartbeat, poll_ms, rebuild_requested, rebuild_started, rebuild_ended, rebuild_applied, rebuild_position, rebuild_target, rebuild_error`

func scanStatus(row pgx.Row, now time.Time) (Status, error) {
	var (
		st                            Status
		cp, head, lag, poll           int64
		applied, rpos, target         int64
		state, rerr                   string
		hb, requested, started, ended *time.Time
	)
	err := row.Scan(&st.Name, &st.Table, &st.Generation, &cp, &st.Updated, &state, &st.LastError, &head, &lag, &st.LagSeconds,
		&hb, &poll, &requested, &started, &ended, &applied, &rpos, &target, &rerr)
	if err != nil {
		return st, err
	}
	st.Checkpoint, st.Head, st.Lag = uint64(cp), uint64(head), uint64(lag)
	st.State = State(state)
	if hb != nil {
		st.Heartbeat = *hb
	}
	if requested != nil || started != nil {
		r := &RebuildStatus{Applied: uint64(applied), Position: uint64(rpos), Target: uint64(target), Error: rerr}
		for _, f := range []struct {
			dst *time.Time
			src *time.Time
		}{{&r.Requested, requested}, {&r.Started, started}, {&r.Ended, ended}} {
			if f.src != nil {
				*f.dst = *f.src
			}
		}
		st.Rebuild = r
	}
	stale := max(10*time.Duration(poll)*time.Millisecond, 5*time.Second)
	alive := now.Sub(st.Heartbeat) <= stale
	switch {
	case st.Rebuild.Running() && alive:
		st.State = StateRebuilding
	case st.State == StateRunning && !alive:
		st.State = StateStopped
	}
	return st, nil
}

// undefinedTable reports whether err says the state table does not exist:
// no projection was ever created in the database.
func undefinedTable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "42P01"
}

// List returns the state of every projection kept in pool's database, by
// name: what `herald projection list` shows. A database where no
// projection was ever created has none.
func List(ctx context.Context, pool *pgxpool.Pool) ([]Status, error) {
	rows, err := pool.Query(ctx, `SELECT `+statusColumns+` FROM `+stateTable+` ORDER BY name`)
	if undefinedTable(err) {
		return []Status{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("projection: list: %w", err)
	}
	defer rows.Close()
	now := time.Now()
	out := []Status{}
	for rows.Next() {
		st, err := scanStatus(rows, now)
		if err != nil {
			return nil, fmt.Errorf("projection: list: %w", err)
		}
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		if undefinedTable(err) {
			return []Status{}, nil
		}
		return nil, fmt.Errorf("projection: list: %w", err)
	}
	return out, nil
}

// Lookup returns the state of the projection name kept in pool's
// database, or an error wrapping ErrNotFound.
func Lookup(ctx context.Context, pool *pgxpool.Pool, name string) (Status, error) {
	if !nameRE.MatchString(name) {
		return Status{}, fmt.Errorf("%w: %q is not a projection name (a letter or underscore followed by up to 40 letters, digits or underscores)", ErrNotFound, name)
	}
	st, err := scanStatus(pool.QueryRow(ctx, `SELECT `+statusColumns+` FROM `+stateTable+` WHERE name = $1`, name), time.Now())
	if errors.Is(err, pgx.ErrNoRows) || undefinedTable(err) {
		return Status{}, fmt.Errorf("%w: no projection %q", ErrNotFound, name)
	}
	if err != nil {
		return Status{}, fmt.Errorf("projection %s: %w", name, err)
	}
	return st, nil
}

// RequestRebuild asks the projector running projection name (Run, in
// this or another process) to rebuild it; Run starts the rebuild within
// a second and records its progress, which Lookup reads. It fails with
// ErrRebuilding while a rebuild is asked for or running, and with
// ErrNotFound for an unknown projection. Without a running projector the
// request waits for one.
func RequestRebuild(ctx context.Context, pool *pgxpool.Pool, name string) (Status, error) {
	st, err := Lookup(ctx, pool, name)
	if err != nil {
		return st, err
	}
	if st.State == StateRebuilding || st.Rebuild != nil && !st.Rebuild.Requested.IsZero() {
		return st, fmt.Errorf("projection %s: %w", name, ErrRebuilding)
	}
	// A rebuild that never ended, of a projector that stopped sending
	// heartbeats, was cut short.
	tag, err := pool.Exec(ctx, `UPDATE `+stateTable+` SET rebuild_requested = now(),
	rebuild_error = CASE WHEN rebuild_started IS NOT NULL AND rebuild_ended IS NULL THEN 'cut short: the projector stopped' ELSE rebuild_error END,
	rebuild_ended = CASE WHEN rebuild_started IS NOT NULL AND rebuild_ended IS NULL THEN now() ELSE rebuild_ended END
	WHERE name = $1 AND rebuild_requested IS NULL`, name)
	if err != nil {
		return st, fmt.Errorf("projection %s: request rebuild: %w", name, err)
	}
	if tag.RowsAffected() == 0 {
		return st, fmt.Errorf("projection %s: %w", name, ErrRebuilding)
	}
	return Lookup(ctx, pool, name)
}
