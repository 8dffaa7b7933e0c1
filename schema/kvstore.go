package schema

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// KVStore is a Store on a JetStream key-value bucket. It survives restarts
// of the registry and of the NATS server (file storage), and is replicated
// when the bucket is (see WithKVReplicas).
type KVStore struct {
	kv jetstream.KeyValue
}

var _ Store = (*KVStore)(nil)

// KVOption configures NewKVStore.
type KVOption func(*jetstream.KeyValueConfig)

// WithKVReplicas sets the bucket's replica count when NewKVStore creates
// it. Default 1; use 3 on a three-node cluster.
func WithKVReplicas(n int) KVOption {
	return func(c *jetstream.KeyValueConfig) { c.Replicas = n }
}

// WithKVMemoryStorage keeps the bucket in memory instead of on disk (for
// tests). Default file storage.
func WithKVMemoryStorage() KVOption {
	return func(c *jetstream.KeyValueConfig) { c.Storage = jetstream.MemoryStorage }
}

// DefaultBucket is the bucket name Herald's server uses.
const DefaultBucket = "herald_schemas"

// NewKVStore opens the key-value bucket named bucket, creating it (file
// storage, one replica, one revision of history) if it does not exist.
func NewKVStore(ctx context.Context, js jetstream.JetStream, bucket string, opts ...KVOption) (*KVStore, error) {
	if js == nil {
		return nil, errors.New("schema: NewKVStore: nil JetStream context")
	}
	if bucket == "" {
		return nil, errors.New("schema: NewKVStore: empty bucket name (use schema.DefaultBucket)")
	}
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		cfg := jetstream.KeyValueConfig{
			Bucket:      bucket,
			Description: "Herald schema registry",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    1,
		}
		for _, o := range opts {
			o(&cfg)
		}
		kv, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("schema: open bucket %q: %w", bucket, err)
	}
	return &KVStore{kv: kv}, nil
}

// Get implements Store.
func (s *KVStore) Get(ctx context.Context, key string) (Entry, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return Entry{}, ErrKeyNotFound
	}
	if err != nil {
		return Entry{}, kvError(err)
	}
	return Entry{Key: key, Value: e.Value(), Revision: e.Revision()}, nil
}

// Create implements Store.
func (s *KVStore) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	rev, err := s.kv.Create(ctx, key, value)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, ErrKeyExists
	}
	return rev, kvError(err)
}

// Update implements Store.
func (s *KVStore) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	n, err := s.kv.Update(ctx, key, value, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return 0, ErrRevisionMismatch
	}
	return n, kvError(err)
}

// Put implements Store.
func (s *KVStore) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	rev, err := s.kv.Put(ctx, key, value)
	return rev, kvError(err)
}

// Delete implements Store. It purges the key so no old value is kept.
func (s *KVStore) Delete(ctx context.Context, key string) error {
	err := s.kv.Purge(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return kvError(err)
}

// kvError marks the errors that say the bucket is gone or JetStream does
// not answer with ErrStoreUnavailable.
func kvError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) ||
		errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
		return fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
	}
	return err
}

// Watch implements Store.
func (s *KVStore) Watch(ctx context.Context) (<-chan Entry, error) {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("schema: watch bucket: %w", err)
	}
	out := make(chan Entry)
	go func() {
		defer close(out)
		defer func() { _ = w.Stop() }()
		for {
			var e jetstream.KeyValueEntry
			var ok bool
			select {
			case <-ctx.Done():
				return
			case e, ok = <-w.Updates():
				if !ok {
					return
				}
			}
			var en Entry
			if e != nil {
				en = Entry{Key: e.Key(), Value: e.Value(), Revision: e.Revision(),
					Deleted: e.Operation() != jetstream.KeyValuePut}
			}
			select {
			case out <- en:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}
