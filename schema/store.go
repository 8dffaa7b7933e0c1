package schema

import (
	"context"
	"errors"
)

// Store is the key-value storage a Registry keeps its state in. Keys are
// made of the characters [-_.A-Za-z0-9]. Every write returns the key's new
// revision; revisions grow across the whole store.
//
// The registry keeps a full copy of the state in memory, built from Watch
// at start and kept current by it, and writes through the store with
// revision checks, so several registries can share one store.
//
// Implementations are safe for concurrent use.
type Store interface {
	// Get returns the current entry for key, or ErrKeyNotFound.
	Get(ctx context.Context, key string) (Entry, error)
	// Create writes key only if it does not exist (or was deleted);
	// otherwise it returns ErrKeyExists.
	Create(ctx context.Context, key string, value []byte) (uint64, error)
	// Update writes key only if its current revision is rev; otherwise it
	// returns ErrRevisionMismatch.
	Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error)
	// Put writes key unconditionally.
	Put(ctx context.Context, key string, value []byte) (uint64, error)
	// Delete removes key. Deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// Watch sends every current entry, then an entry with an empty Key to
	// mark the end of the initial state, then every change (deletions with
	// Deleted set) until ctx is done, when it closes the channel. The
	// goroutine feeding the channel stops when ctx is done; callers drain
	// the channel until it is closed.
	Watch(ctx context.Context) (<-chan Entry, error)
}

// Entry is a key's value at a revision.
type Entry struct {
	Key      string
	Value    []byte
	Revision uint64
	// Deleted is true for a deletion seen by Watch.
	Deleted bool
}

// Store errors.
var (
	// ErrKeyNotFound is returned by Store.Get for a missing key.
	ErrKeyNotFound = errors.New("schema: key not found")
	// ErrKeyExists is returned by Store.Create for an existing key.
	ErrKeyExists = errors.New("schema: key exists")
	// ErrRevisionMismatch is returned by Store.Update when the key changed.
	ErrRevisionMismatch = errors.New("schema: revision mismatch")
	// ErrStoreUnavailable is wrapped by Store errors that say the store
	// does not answer or is gone, as opposed to a refused write.
	ErrStoreUnavailable = errors.New("schema: store unavailable")
)
