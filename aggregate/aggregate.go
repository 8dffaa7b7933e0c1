// Package aggregate is a small generic repository for event-sourced
// aggregates on an eventstore.Store: load (snapshot, then the events after
// it), decide, record new events, save with the expected version, and
// retry the whole command when another writer got there first.
//
// State is a value of any type S; Apply folds one event into it. Old
// event versions are turned into new ones on read by Upcasters, so Apply
// only knows the current shape of each event.
package aggregate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/eventstore"
)

// SnapshotType is the event type of snapshot records.
const SnapshotType = "herald.aggregate.snapshot"

// Config describes an aggregate type.
type Config[S any] struct {
	// Name prefixes stream names: the aggregate with id "42" of Name
	// "order" lives in stream "order-42". Required.
	Name string
	// Source is the source of the events Record creates. Required.
	Source string
	// Apply folds one event into the state. Required.
	Apply func(state S, e *event.Event) (S, error)
	// Upcasters turn old event versions into current ones before Apply.
	Upcasters Upcasters
	// SnapshotEvery writes a snapshot every that many versions on Save.
	// 0: no snapshots.
	SnapshotEvery uint64
	// SnapshotVersion is the version of the state's encoding. A snapshot
	// written with another one is ignored (the aggregate is replayed from
	// its events), so bump it when S changes shape.
	SnapshotVersion int
	// Snapshots is where snapshots are kept. Default: the repository's
	// store, in stream "<stream>.snapshot".
	Snapshots eventstore.Store
	// MaxRetries bounds Update's attempts after conflicts. Default 10.
	// Between attempts Update waits a random time that doubles with each
	// conflict (up to 1 ms after the first, at most 100 ms), so writers of
	// a hot aggregate spread out instead of colliding again at once.
	MaxRetries int
}

// Repository loads and saves aggregates of one type. It is safe for
// concurrent use.
type Repository[S any] struct {
	store eventstore.Store
	cfg   Config[S]
}

// New returns a repository for the aggregate type cfg describes.
func New[S any](store eventstore.Store, cfg Config[S]) (*Repository[S], error) {
	switch {
	case store == nil:
		return nil, errors.New("aggregate: store is nil")
	case cfg.Name == "":
		return nil, errors.New("aggregate: Config.Name is required")
	case cfg.Source == "":
		return nil, errors.New("aggregate: Config.Source is required")
	case cfg.Apply == nil:
		return nil, errors.New("aggregate: Config.Apply is required")
	case cfg.MaxRetries < 0:
		return nil, fmt.Errorf("aggregate: Config.MaxRetries %d is negative", cfg.MaxRetries)
	}
	if err := eventstore.ValidateStream(cfg.Name + "-x"); err != nil {
		return nil, fmt.Errorf("aggregate: Config.Name %q: %w", cfg.Name, err)
	}
	if cfg.Snapshots == nil {
		cfg.Snapshots = store
	}
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = 10
	}
	return &Repository[S]{store: store, cfg: cfg}, nil
}

// Aggregate is one loaded aggregate: its state at Version, plus the
// events recorded since it was loaded.
type Aggregate[S any] struct {
	// ID is the aggregate's id; Stream is its stream.
	ID, Stream string
	// State is the current state, including recorded events.
	State S
	// Version is the stream version State was loaded at.
	Version uint64

	apply   func(S, *event.Event) (S, error)
	source  string
	pending []*event.Event
}

// Record applies a new event of type typ with data marshalled as JSON to
// the state and keeps it for Save. An Apply error leaves the aggregate
// unchanged.
func (a *Aggregate[S]) Record(typ string, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("aggregate %s: event %q: encode data: %w", a.Stream, typ, err)
	}
	e := event.New(a.source, typ, b)
	e.DataContentType = "application/json"
	e.Subject = a.ID
	return a.RecordEvent(e)
}

// RecordEvent is Record for a ready-made event.
func (a *Aggregate[S]) RecordEvent(e *event.Event) error {
	if e.Type == "" {
		return fmt.Errorf("aggregate %s: event without a type", a.Stream)
	}
	s, err := a.apply(a.State, e)
	if err != nil {
		return err
	}
	a.State = s
	a.pending = append(a.pending, e)
	return nil
}

// Pending returns the events recorded since the aggregate was loaded.
func (a *Aggregate[S]) Pending() []*event.Event { return a.pending }

// Stream returns the stream name of the aggregate with this id.
func (r *Repository[S]) Stream(id string) string { return r.cfg.Name + "-" + id }

type snapshot[S any] struct {
	Schema  int    `json:"schema"`
	Version uint64 `json:"version"`
	State   S      `json:"state"`
}

// Load returns the aggregate with id: from its latest usable snapshot and
// the events after it. An aggregate without events has Version 0 and the
// zero state.
func (r *Repository[S]) Load(ctx context.Context, id string) (*Aggregate[S], error) {
	stream := r.Stream(id)
	if err := eventstore.ValidateStream(stream); err != nil {
		return nil, fmt.Errorf("aggregate: id %q: %w", id, err)
	}
	a := &Aggregate[S]{ID: id, Stream: stream, apply: r.cfg.Apply, source: r.cfg.Source}
	if r.cfg.SnapshotEvery > 0 {
		rec, err := r.cfg.Snapshots.Last(ctx, stream+".snapshot")
		switch {
		case errors.Is(err, eventstore.ErrNotFound):
		case err != nil:
			return nil, fmt.Errorf("aggregate %s: load snapshot: %w", stream, err)
		default:
			var snap snapshot[S]
			if err := json.Unmarshal(rec.Event.Data, &snap); err != nil {
				return nil, fmt.Errorf("aggregate %s: snapshot at version %d does not decode (bump Config.SnapshotVersion if the state changed shape): %w", stream, rec.Version, err)
			}
			if snap.Schema == r.cfg.SnapshotVersion {
				a.State, a.Version = snap.State, snap.Version
			}
		}
	}
	for rec, err := range r.store.Load(ctx, stream, a.Version) {
		if err != nil {
			return nil, fmt.Errorf("aggregate %s: %w", stream, err)
		}
		e, err := r.cfg.Upcasters.Upcast(rec.Event)
		if err != nil {
			return nil, fmt.Errorf("aggregate %s: version %d: %w", stream, rec.Version, err)
		}
		if a.State, err = r.cfg.Apply(a.State, e); err != nil {
			return nil, fmt.Errorf("aggregate %s: apply version %d (%s): %w", stream, rec.Version, e.Type, err)
		}
		a.Version = rec.Version
	}
	return a, nil
}

// Save appends the aggregate's recorded events, expecting the version it
// was loaded at; another writer in between makes it fail with
// eventstore.ErrConflict. It writes a snapshot when the new version
// crosses a multiple of SnapshotEvery; a failed snapshot write is
// returned but the events are saved.
func (r *Repository[S]) Save(ctx context.Context, a *Aggregate[S]) error {
	if len(a.pending) == 0 {
		return nil
	}
	res, err := r.store.Append(ctx, a.Stream, eventstore.Exact(a.Version), a.pending...)
	if err != nil {
		return fmt.Errorf("aggregate %s: save: %w", a.Stream, err)
	}
	old := a.Version
	a.Version, a.pending = res.Version, nil
	if n := r.cfg.SnapshotEvery; n > 0 && res.Version/n > old/n {
		b, err := json.Marshal(snapshot[S]{Schema: r.cfg.SnapshotVersion, Version: res.Version, State: a.State})
		if err != nil {
			return fmt.Errorf("aggregate %s: encode snapshot: %w", a.Stream, err)
		}
		e := event.New(r.cfg.Source, SnapshotType, b)
		e.DataContentType = "application/json"
		e.Subject = a.ID
		if _, err := r.cfg.Snapshots.Append(ctx, a.Stream+".snapshot", eventstore.Any, e); err != nil {
			return fmt.Errorf("aggregate %s: write snapshot at version %d: %w", a.Stream, res.Version, err)
		}
	}
	return nil
}

// Update runs a command: it loads the aggregate, calls fn to record
// events, and saves; on a version conflict it does it all again with the
// fresh state, up to MaxRetries times, after a jittered wait (see
// Config.MaxRetries). An error from fn is returned as is and nothing is
// saved.
func (r *Repository[S]) Update(ctx context.Context, id string, fn func(*Aggregate[S]) error) (*Aggregate[S], error) {
	var err error
	for attempt := range r.cfg.MaxRetries + 1 {
		if attempt > 0 {
			if werr := waitAfterConflict(ctx, attempt); werr != nil {
				return nil, fmt.Errorf("aggregate %s: %w after %d conflicts (last: %w)", r.Stream(id), werr, attempt, err)
			}
		}
		var a *Aggregate[S]
		if a, err = r.Load(ctx, id); err != nil {
			return nil, err
		}
		if err = fn(a); err != nil {
			return nil, err
		}
		if err = r.Save(ctx, a); err == nil || !errors.Is(err, eventstore.ErrConflict) {
			return a, err
		}
	}
	return nil, fmt.Errorf("aggregate %s: gave up after %d conflicts: %w", r.Stream(id), r.cfg.MaxRetries+1, err)
}

// maxConflictWait caps the wait between Update's attempts.
const maxConflictWait = 100 * time.Millisecond

// waitAfterConflict waits before attempt n (n >= 1): a random time below
// 1 ms·2^(n-1), at most maxConflictWait, or until ctx ends.
func waitAfterConflict(ctx context.Context, n int) error {
	ceil := min(time.Millisecond<<min(n-1, 10), maxConflictWait)
	t := time.NewTimer(rand.N(ceil))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Upcaster turns an event of an old type into the next version.
type Upcaster func(*event.Event) (*event.Event, error)

// Upcasters maps an event type ("shop.order.placed.v1") to the upcaster
// that turns it into the next version; Upcast applies them in a chain
// (v1 to v2 to v3) until the type has none. The zero value upcasts
// nothing.
type Upcasters map[string]Upcaster

// maxChain bounds an upcaster chain, so a cycle is an error.
const maxChain = 64

// Upcast returns e turned into its current version (e itself if there is
// no upcaster for its type).
func (u Upcasters) Upcast(e *event.Event) (*event.Event, error) {
	for range maxChain {
		up, ok := u[e.Type]
		if !ok {
			return e, nil
		}
		from := e.Type
		next, err := up(e.Clone())
		if err != nil {
			return nil, fmt.Errorf("upcast %s: %w", from, err)
		}
		if next == nil || next.Type == "" || next.Type == from {
			return nil, fmt.Errorf("upcast %s: the upcaster must return an event of another type", from)
		}
		e = next
	}
	return nil, fmt.Errorf("upcast %s: chain longer than %d: a cycle?", e.Type, maxChain)
}
