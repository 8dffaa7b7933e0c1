// Package memory is an eventstore.Store in process memory, for tests and
// single-process tools. Nothing survives the process.
package memory

import (
	"context"
	"fmt"
	"iter"
	"sync"
	"time"

	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/eventstore"
)

// Store is an eventstore.Store in memory. It is safe for concurrent use.
// The zero value is not usable; call New.
type Store struct {
	mu      sync.RWMutex
	all     []*eventstore.Record // by position; position = index+1
	streams map[string]*stream
	changed chan struct{} // closed and replaced on every append
}

type stream struct {
	records []*eventstore.Record // by version; version = index+1
	ids     map[string]struct{}
	meta    eventstore.Metadata
}

// New returns an empty store.
func New() *Store {
	return &Store{streams: make(map[string]*stream), changed: make(chan struct{})}
}

var _ eventstore.Store = (*Store)(nil)
var _ eventstore.Waiter = (*Store)(nil)
var _ eventstore.Positioner = (*Store)(nil)

// Append implements eventstore.Store.
func (s *Store) Append(ctx context.Context, name string, expected eventstore.Expected, events ...*event.Event) (eventstore.AppendResult, error) {
	evs, err := eventstore.Prepare(name, expected, events)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return eventstore.AppendResult{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[name]
	if st != nil && st.meta.Tombstoned {
		return eventstore.AppendResult{}, fmt.Errorf("append to stream %q: %w", name, eventstore.ErrDeleted)
	}
	var version uint64
	if st != nil {
		version = uint64(len(st.records))
		fresh := evs[:0]
		for _, e := range evs {
			if _, dup := st.ids[e.ID]; !dup {
				fresh = append(fresh, e)
			}
		}
		if len(fresh) == 0 && len(evs) > 0 {
			return eventstore.AppendResult{Version: version}, nil
		}
		evs = fresh
	}
	if err := expected.Check(name, version); err != nil {
		return eventstore.AppendResult{}, err
	}
	if len(evs) == 0 {
		return eventstore.AppendResult{Version: version}, nil
	}
	if st == nil {
		st = &stream{ids: make(map[string]struct{})}
		s.streams[name] = st
	}
	now := time.Now().UTC()
	for _, e := range evs {
		version++
		e.Sequence = version
		rec := &eventstore.Record{Stream: name, Version: version, Position: uint64(len(s.all)) + 1, Recorded: now, Event: e}
		s.all = append(s.all, rec)
		st.records = append(st.records, rec)
		st.ids[e.ID] = struct{}{}
	}
	close(s.changed)
	s.changed = make(chan struct{})
	return eventstore.AppendResult{Version: version, Position: uint64(len(s.all)), Written: len(evs)}, nil
}

func copyRecord(r *eventstore.Record) *eventstore.Record {
	c := *r
	c.Event = r.Event.Clone()
	return &c
}

// Load implements eventstore.Store.
func (s *Store) Load(ctx context.Context, name string, after uint64) iter.Seq2[*eventstore.Record, error] {
	return func(yield func(*eventstore.Record, error) bool) {
		if err := eventstore.ValidateStream(name); err != nil {
			yield(nil, err)
			return
		}
		s.mu.RLock()
		st := s.streams[name]
		var recs []*eventstore.Record
		var meta eventstore.Metadata
		if st != nil {
			recs, meta = st.records, st.meta
		}
		s.mu.RUnlock()
		if meta.Tombstoned {
			yield(nil, fmt.Errorf("load stream %q: %w", name, eventstore.ErrDeleted))
			return
		}
		last := uint64(len(recs))
		now := time.Now()
		for _, r := range recs[min(after, last):] {
			if err := ctx.Err(); err != nil {
				yield(nil, err)
				return
			}
			if !meta.Visible(r.Version, r.Recorded, last, now) {
				continue
			}
			if !yield(copyRecord(r), nil) {
				return
			}
		}
	}
}

// ReadAll implements eventstore.Store.
func (s *Store) ReadAll(ctx context.Context, after uint64) iter.Seq2[*eventstore.Record, error] {
	return func(yield func(*eventstore.Record, error) bool) {
		s.mu.RLock()
		all := s.all
		s.mu.RUnlock()
		for _, r := range all[min(after, uint64(len(all))):] {
			if err := ctx.Err(); err != nil {
				yield(nil, err)
				return
			}
			if !yield(copyRecord(r), nil) {
				return
			}
		}
	}
}

// Last implements eventstore.Store.
func (s *Store) Last(ctx context.Context, name string) (*eventstore.Record, error) {
	if err := eventstore.ValidateStream(name); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := s.streams[name]
	if st == nil || len(st.records) == 0 {
		return nil, fmt.Errorf("last event of stream %q: %w", name, eventstore.ErrNotFound)
	}
	if st.meta.Tombstoned {
		return nil, fmt.Errorf("last event of stream %q: %w", name, eventstore.ErrDeleted)
	}
	r := st.records[len(st.records)-1]
	if !st.meta.Visible(r.Version, r.Recorded, r.Version, time.Now()) {
		return nil, fmt.Errorf("last event of stream %q: %w", name, eventstore.ErrNotFound)
	}
	return copyRecord(r), nil
}

// Info implements eventstore.Store.
func (s *Store) Info(ctx context.Context, name string) (eventstore.StreamInfo, error) {
	if err := eventstore.ValidateStream(name); err != nil {
		return eventstore.StreamInfo{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	info := eventstore.StreamInfo{Stream: name}
	if st := s.streams[name]; st != nil {
		info.Version = uint64(len(st.records))
		info.Metadata = st.meta
	}
	return info, nil
}

// SetMetadata implements eventstore.Store.
func (s *Store) SetMetadata(ctx context.Context, name string, meta eventstore.Metadata) error {
	return s.update(name, func(st *stream) error {
		if meta.Tombstoned {
			return fmt.Errorf("%w: set metadata of stream %q: use Tombstone to tombstone a stream", eventstore.ErrInvalid, name)
		}
		if err := meta.Validate(); err != nil {
			return err
		}
		st.meta = meta
		return nil
	})
}

// Delete implements eventstore.Store.
func (s *Store) Delete(ctx context.Context, name string) error {
	return s.update(name, func(st *stream) error {
		st.meta.TruncateBefore = uint64(len(st.records)) + 1
		return nil
	})
}

// Tombstone implements eventstore.Store.
func (s *Store) Tombstone(ctx context.Context, name string) error {
	return s.update(name, func(st *stream) error {
		st.meta.Tombstoned = true
		return nil
	})
}

func (s *Store) update(name string, fn func(*stream) error) error {
	if err := eventstore.ValidateStream(name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[name]
	if st == nil {
		st = &stream{ids: make(map[string]struct{})}
	}
	if st.meta.Tombstoned {
		return fmt.Errorf("stream %q: %w", name, eventstore.ErrDeleted)
	}
	if err := fn(st); err != nil {
		return err
	}
	s.streams[name] = st
	return nil
}

// Wait implements eventstore.Waiter.
func (s *Store) Wait(ctx context.Context, after uint64) error {
	s.mu.RLock()
	n, ch := uint64(len(s.all)), s.changed
	s.mu.RUnlock()
	if n > after {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// LastPosition returns the position of the last event stored, 0 when
// there is none.
func (s *Store) LastPosition(ctx context.Context) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return uint64(len(s.all)), nil
}
