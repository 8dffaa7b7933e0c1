package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultBucket is the JetStream KV bucket of KVStore unless given.
const DefaultBucket = "herald_sagas"

// KVStore keeps instances in a JetStream KV bucket, one key per instance;
// the key's revision is the instance's version. A second bucket (the
// name + "_active") holds an empty key per instance not yet finished, so
// that listing the running and compensating instances, which the engine
// does every tick, does not read the finished ones. It is safe for
// concurrent use.
type KVStore struct {
	kv     jetstream.KeyValue
	active jetstream.KeyValue // nil: list by reading every instance
}

// NewKVStore opens (creating it if needed) the bucket, file-stored with
// one replica unless it exists already.
func NewKVStore(ctx context.Context, js jetstream.JetStream, bucket string) (*KVStore, error) {
	if bucket == "" {
		bucket = DefaultBucket
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("saga: kv bucket %q: %w", bucket, err)
	}
	active, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket + "_active", History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("saga: kv bucket %q: %w", bucket+"_active", err)
	}
	return &KVStore{kv: kv, active: active}, nil
}

// OpenKVStore opens an existing bucket, for tools that only read it. It
// returns an error wrapping ErrNotFound if the bucket does not exist.
func OpenKVStore(ctx context.Context, js jetstream.JetStream, bucket string) (*KVStore, error) {
	if bucket == "" {
		bucket = DefaultBucket
	}
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("%w: no saga bucket %q", ErrNotFound, bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("saga: kv bucket %q: %w", bucket, err)
	}
	st := &KVStore{kv: kv}
	if active, err := js.KeyValue(ctx, bucket+"_active"); err == nil {
		st.active = active
	}
	return st, nil
}

var _ Store = (*KVStore)(nil)

// Create implements Store.
func (s *KVStore) Create(ctx context.Context, in *Instance) error {
	b, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("saga: encode %q: %w", in.ID, err)
	}
	// The marker comes first: a crash after it leaves a marker without an
	// instance, which List removes; the other way round would hide an
	// active instance from the engine's timers.
	if s.active != nil && !in.State.Terminal() {
		if _, err := s.active.Put(ctx, in.ID, nil); err != nil {
			return fmt.Errorf("saga: create %q: mark active: %w", in.ID, err)
		}
	}
	rev, err := s.kv.Create(ctx, in.ID, b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("%w: %q", ErrExists, in.ID)
	}
	if err != nil {
		return fmt.Errorf("saga: create %q: %w", in.ID, err)
	}
	in.Version = rev
	return nil
}

// Get implements Store.
func (s *KVStore) Get(ctx context.Context, id string) (*Instance, error) {
	e, err := s.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("saga: get %q: %w", id, err)
	}
	var in Instance
	if err := json.Unmarshal(e.Value(), &in); err != nil {
		return nil, fmt.Errorf("saga: decode %q: %w", id, err)
	}
	in.Version = e.Revision()
	return &in, nil
}

// Update implements Store.
func (s *KVStore) Update(ctx context.Context, in *Instance) error {
	b, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("saga: encode %q: %w", in.ID, err)
	}
	rev, err := s.kv.Update(ctx, in.ID, b, in.Version)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return fmt.Errorf("%w: %q at version %d", ErrConflict, in.ID, in.Version)
		}
		return fmt.Errorf("saga: update %q: %w", in.ID, err)
	}
	in.Version = rev
	if s.active != nil && in.State.Terminal() {
		// A crash before this leaves the marker, which List removes.
		_ = s.active.Delete(ctx, in.ID)
	}
	return nil
}

// List implements Store. For running and compensating instances it reads
// those marked active; otherwise every key of the bucket.
func (s *KVStore) List(ctx context.Context, state State) ([]*Instance, error) {
	if s.active == nil || state == "" || state.Terminal() {
		return s.listAll(ctx, state)
	}
	return s.list(ctx, s.active, state, true)
}

// listAll reads every instance in one pass over the bucket, keeping those
// in state ("" for all), rather than one get per key.
func (s *KVStore) listAll(ctx context.Context, state State) ([]*Instance, error) {
	w, err := s.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("saga: list: %w", err)
	}
	defer func() { _ = w.Stop() }()
	var out []*Instance
	for {
		var e jetstream.KeyValueEntry
		select {
		case e = <-w.Updates():
		case <-ctx.Done():
			return nil, fmt.Errorf("saga: list: %w", ctx.Err())
		}
		if e == nil {
			break // every current value was delivered
		}
		var in Instance
		if err := json.Unmarshal(e.Value(), &in); err != nil {
			return nil, fmt.Errorf("saga: decode %q: %w", e.Key(), err)
		}
		in.Version = e.Revision()
		if state == "" || in.State == state {
			out = append(out, &in)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("saga: list: %w", err) // the watch ended early
	}
	slices.SortFunc(out, func(a, b *Instance) int { return a.Created.Compare(b.Created) })
	return out, nil
}

// list reads the instances named by the keys of bucket in, keeping
// those in state; with prune it deletes the markers of instances that
// are gone or finished.
func (s *KVStore) list(ctx context.Context, in jetstream.KeyValue, state State, prune bool) ([]*Instance, error) {
	keys, err := in.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("saga: list: %w", err)
	}
	// Read every key before anything else: a lister left half read
	// blocks its subscription's goroutine.
	var ids []string
	for id := range keys.Keys() {
		ids = append(ids, id)
	}
	_ = keys.Stop()
	var out []*Instance
	for _, id := range ids {
		inst, err := s.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			if prune {
				_ = s.active.Delete(ctx, id)
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if prune && inst.State.Terminal() {
			_ = s.active.Delete(ctx, id)
		}
		if state == "" || inst.State == state {
			out = append(out, inst)
		}
	}
	slices.SortFunc(out, func(a, b *Instance) int { return a.Created.Compare(b.Created) })
	return out, nil
}
