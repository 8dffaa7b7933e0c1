// Package projection builds read models (CQRS) from an event store into
// PostgreSQL tables, with the checkpoint written in the same transaction as
// the read model, so a crash never applies an event twice or skips one.
//
// Queries read the projection through a view named after it; the view
// points at the table currently serving. Rebuild fills a fresh table from
// the first event while the old one keeps serving, then swaps the view in
// one transaction: queries never see a missing or half-built model.
//
// State, in table herald_projections: the projection's name, the table it
// serves from, its checkpoint (the position of the last event applied),
// and what tools read through List and Lookup: the store's head, the lag,
// whether a projector runs or rebuilds it, its last error and a rebuild's
// progress. RequestRebuild asks the projector running a projection (in
// another process) to rebuild it; `herald projection rebuild` does so.
package projection

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/eventstore"
)

// Handler applies one event to the read model in table, inside tx.
type Handler func(ctx context.Context, tx pgx.Tx, table string, rec *eventstore.Record) error

// Config describes a projection.
type Config struct {
	// Name names the projection and the view queries read it through: a
	// letter or underscore followed by up to 40 letters, digits or
	// underscores. Required.
	Name string
	// Create returns the DDL that creates the read-model table named
	// table (already quoted). Required.
	Create func(table string) string
	// Handle applies an event. Required.
	Handle Handler
	// BatchSize is how many events go in one transaction. Default 500.
	BatchSize int
	// Poll is how often Run looks for new events. Default 100ms.
	Poll time.Duration
	// Registerer, if set, receives the lag and checkpoint metrics.
	Registerer prometheus.Registerer
	// Logger receives what Run does not return: a failed rebuild. Default
	// slog.Default().
	Logger *slog.Logger
}

// Projector runs one projection. It is safe for concurrent use; run one
// Run per projection at a time (a row lock keeps two from interleaving).
type Projector struct {
	pool  *pgxpool.Pool
	store eventstore.Store
	cfg   Config

	lag        prometheus.Gauge
	checkpoint prometheus.Gauge

	rebuilding atomic.Bool
	reported   time.Time // when CatchUp last wrote the heartbeat; Run's goroutine only
}

var nameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,40}$`)

const stateTable = "herald_projections"

// New returns a projector and creates its state and first table if needed.
func New(ctx context.Context, pool *pgxpool.Pool, store eventstore.Store, cfg Config) (*Projector, error) {
	switch {
	case pool == nil || store == nil:
		return nil, errors.New("projection: pool and store are required")
	case !nameRE.MatchString(cfg.Name):
		return nil, fmt.Errorf("projection: name %q: want a letter or underscore followed by up to 40 letters, digits or underscores", cfg.Name)
	case cfg.Create == nil || cfg.Handle == nil:
		return nil, fmt.Errorf("projection %s: Create and Handle are required", cfg.Name)
	case cfg.BatchSize < 0 || cfg.Poll < 0:
		return nil, fmt.Errorf("projection %s: BatchSize and Poll must not be negative", cfg.Name)
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 500
	}
	if cfg.Poll == 0 {
		cfg.Poll = 100 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Projector{pool: pool, store: store, cfg: cfg,
		lag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "herald_projection_lag_seconds",
			Help: "Age of the last event a projection applied while it is behind; 0 when caught up.", ConstLabels: prometheus.Labels{"projection": cfg.Name}}),
		checkpoint: prometheus.NewGauge(prometheus.GaugeOpts{Name: "herald_projection_checkpoint",
			Help: "Position of the last event a projection applied.", ConstLabels: prometheus.Labels{"projection": cfg.Name}}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{p.lag, p.checkpoint} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("projection %s: register metrics: %w", cfg.Name, err)
			}
		}
	}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('herald-projections'))"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+stateTable+` (
	name text PRIMARY KEY, active text NOT NULL, generation bigint NOT NULL,
	checkpoint bigint NOT NULL DEFAULT 0, updated_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, stateColumns); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT true FROM `+stateTable+` WHERE name = $1`, cfg.Name).Scan(&exists); err == nil {
			return nil
		} else if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		table := p.table(1)
		if _, err := tx.Exec(ctx, cfg.Create(pgx.Identifier{table}.Sanitize())); err != nil {
			return fmt.Errorf("create table %s: %w", table, err)
		}
		if err := p.pointView(ctx, tx, table); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO `+stateTable+` (name, active, generation) VALUES ($1, $2, 1)`, cfg.Name, table)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("projection %s: set up: %w", cfg.Name, err)
	}
	return p, nil
}

// Name returns the projection's name, which is also its view's.
func (p *Projector) Name() string { return p.cfg.Name }

func (p *Projector) table(gen int64) string { return fmt.Sprintf("%s_g%d", p.cfg.Name, gen) }

func (p *Projector) pointView(ctx context.Context, tx pgx.Tx, table string) error {
	_, err := tx.Exec(ctx, fmt.Sprintf(`CREATE OR REPLACE VIEW %s AS SELECT * FROM %s`,
		pgx.Identifier{p.cfg.Name}.Sanitize(), pgx.Identifier{table}.Sanitize()))
	if err != nil {
		return fmt.Errorf("point view %s at %s: %w", p.cfg.Name, table, err)
	}
	return nil
}

// Status returns the projection's state.
func (p *Projector) Status(ctx context.Context) (Status, error) {
	st, err := Lookup(ctx, p.pool, p.cfg.Name)
	if err != nil {
		return st, fmt.Errorf("projection %s: status: %w", p.cfg.Name, err)
	}
	return st, nil
}

// CatchUp applies every event stored after the checkpoint, in batches of
// BatchSize, each in one transaction with the checkpoint, and returns the
// new checkpoint.
func (p *Projector) CatchUp(ctx context.Context) (uint64, error) {
	var cp0 int64
	if err := p.pool.QueryRow(ctx, `SELECT checkpoint FROM `+stateTable+` WHERE name = $1`, p.cfg.Name).Scan(&cp0); err != nil {
		return 0, fmt.Errorf("projection %s: checkpoint: %w", p.cfg.Name, err)
	}
	pos := uint64(cp0)
	// The head before reading: ReadAll returns at least every event up
	// to it, so a round that ends without error has caught up with it.
	head, err := p.head(ctx)
	if err != nil {
		return pos, err
	}
	var batch []*eventstore.Record
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
			var table string
			var cp int64
			// The row lock orders this batch with a concurrent swap.
			if err := tx.QueryRow(ctx, `SELECT active, checkpoint FROM `+stateTable+` WHERE name = $1 FOR UPDATE`, p.cfg.Name).Scan(&table, &cp); err != nil {
				return err
			}
			if uint64(cp) < pos {
				return fmt.Errorf("checkpoint moved back from %d to %d under this projector", pos, cp)
			}
			// A rebuild that swapped tables meanwhile has applied the
			// events up to its checkpoint to the new table already.
			todo := batch
			for len(todo) > 0 && todo[0].Position <= uint64(cp) {
				todo = todo[1:]
			}
			if len(todo) == 0 {
				return nil
			}
			for _, r := range todo {
				if err := p.cfg.Handle(ctx, tx, pgx.Identifier{table}.Sanitize(), r); err != nil {
					return fmt.Errorf("event at position %d (%s %s v%d): %w", r.Position, r.Event.Type, r.Stream, r.Version, err)
				}
			}
			last := batch[len(batch)-1]
			lag := int64(0)
			if head > last.Position {
				lag = int64(head - last.Position)
			}
			_, err := tx.Exec(ctx, `UPDATE `+stateTable+` SET checkpoint = $2, head = greatest(head, $3), lag = $4,
	lag_seconds = $5, heartbeat = now(), updated_at = now() WHERE name = $1`,
				p.cfg.Name, int64(last.Position), int64(max(head, last.Position)), lag, time.Since(last.Recorded).Seconds())
			return err
		})
		if err != nil {
			return err
		}
		last := batch[len(batch)-1]
		pos = last.Position
		p.checkpoint.Set(float64(pos))
		p.lag.Set(time.Since(last.Recorded).Seconds())
		batch = batch[:0]
		return nil
	}
	for r, err := range p.store.ReadAll(ctx, pos) {
		if err != nil {
			return pos, fmt.Errorf("projection %s: read after %d: %w", p.cfg.Name, pos, err)
		}
		batch = append(batch, r)
		if len(batch) >= p.cfg.BatchSize {
			if err := flush(); err != nil {
				return pos, fmt.Errorf("projection %s: %w", p.cfg.Name, err)
			}
		}
	}
	if err := flush(); err != nil {
		return pos, fmt.Errorf("projection %s: %w", p.cfg.Name, err)
	}
	p.lag.Set(0)
	if err := p.caughtUp(ctx, head, pos); err != nil {
		return pos, err
	}
	return pos, nil
}

// head returns the store's last position, 0 when it cannot tell.
func (p *Projector) head(ctx context.Context) (uint64, error) {
	ps, ok := p.store.(eventstore.Positioner)
	if !ok {
		return 0, nil
	}
	h, err := ps.LastPosition(ctx)
	if err != nil {
		return 0, fmt.Errorf("projection %s: store head: %w", p.cfg.Name, err)
	}
	return h, nil
}

// heartbeatEvery is how often an idle projector writes its heartbeat.
const heartbeatEvery = time.Second

// caughtUp records a round that read up to head: no lag. An idle
// projector writes it once a second, as its heartbeat.
func (p *Projector) caughtUp(ctx context.Context, head, pos uint64) error {
	if time.Since(p.reported) < heartbeatEvery {
		return nil
	}
	_, err := p.pool.Exec(ctx, `UPDATE `+stateTable+` SET head = greatest($2::bigint, $3::bigint), lag = 0, lag_seconds = 0, heartbeat = now()
	WHERE name = $1`, p.cfg.Name, int64(head), int64(pos))
	if err != nil {
		return fmt.Errorf("projection %s: heartbeat: %w", p.cfg.Name, err)
	}
	p.reported = time.Now()
	return nil
}

// Run catches up and keeps the projection up to date until ctx ends
// (returning nil) or applying an event fails. While it runs, the
// projection's state says "running" and a rebuild asked for with
// RequestRebuild starts within a second, in a goroutine Run waits for
// before it returns; the live table keeps being updated meanwhile. A
// failed rebuild is recorded (Status.Rebuild.Error) and logged, and Run
// goes on.
func (p *Projector) Run(ctx context.Context) (err error) {
	if err := p.setState(ctx, StateRunning, ""); err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		st, msg := StateStopped, ""
		if err != nil {
			st, msg = StateFailed, err.Error()
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if serr := p.setState(sctx, st, msg); serr != nil && err == nil {
			err = serr
		}
	}()
	t := time.NewTicker(p.cfg.Poll)
	defer t.Stop()
	for {
		if _, err := p.CatchUp(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if !p.rebuilding.Load() {
			requested, err := p.rebuildRequested(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			if requested {
				wg.Go(func() {
					if err := p.Rebuild(ctx, nil); err != nil && ctx.Err() == nil {
						p.cfg.Logger.Error("projection rebuild failed", "projection", p.cfg.Name, "error", err)
					}
				})
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (p *Projector) setState(ctx context.Context, st State, lastErr string) error {
	_, err := p.pool.Exec(ctx, `UPDATE `+stateTable+` SET state = $2, last_error = $3, poll_ms = $4, heartbeat = now() WHERE name = $1`,
		p.cfg.Name, string(st), lastErr, p.cfg.Poll.Milliseconds())
	if err != nil {
		return fmt.Errorf("projection %s: record state %s: %w", p.cfg.Name, st, err)
	}
	return nil
}

// rebuildRequested reports whether RequestRebuild asked for a rebuild
// that has not started.
func (p *Projector) rebuildRequested(ctx context.Context) (bool, error) {
	var req bool
	err := p.pool.QueryRow(ctx, `SELECT rebuild_requested IS NOT NULL FROM `+stateTable+` WHERE name = $1`, p.cfg.Name).Scan(&req)
	if err != nil {
		return false, fmt.Errorf("projection %s: rebuild request: %w", p.cfg.Name, err)
	}
	return req, nil
}

// Progress reports a rebuild's progress: events applied so far, and the
// position to reach.
type Progress func(applied int, position, target uint64)

// ErrRebuilding is returned by Rebuild while this projector rebuilds
// already, and (wrapped) by RequestRebuild while a rebuild is asked for or
// running.
var ErrRebuilding = errors.New("projection: a rebuild is already under way")

// progressEvery is how often a rebuild records its progress.
const progressEvery = 200 * time.Millisecond

// Rebuild builds the read model again from the first event into a fresh
// table while the current one keeps serving, then, in one transaction
// holding the projection's row lock, applies the events that arrived
// meanwhile, points the view at the new table and moves the checkpoint.
// The old table is dropped after the swap; on failure the new one is.
// progress may be nil. The progress is recorded in the projection's state
// too, for Lookup; one projector runs one rebuild at a time.
func (p *Projector) Rebuild(ctx context.Context, progress Progress) (err error) {
	if !p.rebuilding.CompareAndSwap(false, true) {
		return fmt.Errorf("projection %s: %w", p.cfg.Name, ErrRebuilding)
	}
	defer p.rebuilding.Store(false)
	var gen, cp int64
	if err := p.pool.QueryRow(ctx, `UPDATE `+stateTable+` SET generation = generation + 1, rebuild_requested = NULL,
	rebuild_started = now(), rebuild_ended = NULL, rebuild_error = '', rebuild_applied = 0, rebuild_position = 0, rebuild_target = 0
	WHERE name = $1 RETURNING generation, checkpoint`, p.cfg.Name).Scan(&gen, &cp); err != nil {
		return fmt.Errorf("projection %s: rebuild: %w", p.cfg.Name, err)
	}
	table := p.table(gen)
	ident := pgx.Identifier{table}.Sanitize()
	swapped := false
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if !swapped {
			_, _ = p.pool.Exec(dctx, `DROP TABLE IF EXISTS `+ident)
		}
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		_, _ = p.pool.Exec(dctx, `UPDATE `+stateTable+` SET rebuild_ended = now(), rebuild_error = $2 WHERE name = $1`, p.cfg.Name, msg)
	}()
	if _, err := p.pool.Exec(ctx, p.cfg.Create(ident)); err != nil {
		return fmt.Errorf("projection %s: rebuild: create table %s: %w", p.cfg.Name, table, err)
	}
	head, err := p.head(ctx)
	if err != nil {
		return err
	}
	target := max(uint64(cp), head)
	applied := 0
	var pos uint64
	var recorded time.Time
	record := func(force bool) {
		if !force && time.Since(recorded) < progressEvery {
			return
		}
		recorded = time.Now()
		_, _ = p.pool.Exec(ctx, `UPDATE `+stateTable+` SET rebuild_applied = $2, rebuild_position = $3, rebuild_target = $4, heartbeat = now() WHERE name = $1`,
			p.cfg.Name, int64(applied), int64(pos), int64(max(target, pos)))
	}
	record(true)
	apply := func(tx pgx.Tx, batch []*eventstore.Record) error {
		for _, r := range batch {
			if err := p.cfg.Handle(ctx, tx, ident, r); err != nil {
				return fmt.Errorf("event at position %d (%s %s v%d): %w", r.Position, r.Event.Type, r.Stream, r.Version, err)
			}
		}
		applied += len(batch)
		pos = batch[len(batch)-1].Position
		if progress != nil {
			progress(applied, pos, max(target, pos))
		}
		return nil
	}
	// Fill the new table up to where the live projection was, in batches.
	var batch []*eventstore.Record
	for r, err := range p.store.ReadAll(ctx, 0) {
		if err != nil {
			return fmt.Errorf("projection %s: rebuild: %w", p.cfg.Name, err)
		}
		batch = append(batch, r)
		if len(batch) >= p.cfg.BatchSize {
			if err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error { return apply(tx, batch) }); err != nil {
				return fmt.Errorf("projection %s: rebuild: %w", p.cfg.Name, err)
			}
			batch = batch[:0]
			record(false)
		}
	}
	// The swap: lock the state row, so the live projector waits, bring the
	// new table to the live checkpoint or beyond, and switch.
	err = pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		var old string
		var cp int64
		if err := tx.QueryRow(ctx, `SELECT active, checkpoint FROM `+stateTable+` WHERE name = $1 FOR UPDATE`, p.cfg.Name).Scan(&old, &cp); err != nil {
			return err
		}
		if len(batch) > 0 {
			if err := apply(tx, batch); err != nil {
				return err
			}
		}
		for uint64(cp) > pos {
			var more []*eventstore.Record
			for r, err := range p.store.ReadAll(ctx, pos) {
				if err != nil {
					return err
				}
				if r.Position > uint64(cp) {
					break
				}
				more = append(more, r)
			}
			if len(more) == 0 {
				break
			}
			if err := apply(tx, more); err != nil {
				return err
			}
		}
		if err := p.pointView(ctx, tx, table); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE `+stateTable+` SET active = $2, checkpoint = $3, updated_at = now() WHERE name = $1`, p.cfg.Name, table, int64(max(pos, uint64(cp)))); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DROP TABLE IF EXISTS `+pgx.Identifier{old}.Sanitize())
		return err
	})
	if err != nil {
		return fmt.Errorf("projection %s: rebuild: swap to %s: %w", p.cfg.Name, table, err)
	}
	swapped = true
	record(true)
	return nil
}

// Drop removes the projection: its view, its table and its state.
func (p *Projector) Drop(ctx context.Context) error {
	return pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		var table string
		err := tx.QueryRow(ctx, `DELETE FROM `+stateTable+` WHERE name = $1 RETURNING active`, p.cfg.Name).Scan(&table)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DROP VIEW IF EXISTS `+pgx.Identifier{p.cfg.Name}.Sanitize()); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DROP TABLE IF EXISTS `+pgx.Identifier{table}.Sanitize())
		return err
	})
}
