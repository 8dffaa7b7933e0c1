package schema

import (
	"context"
	"sync"
)

// MemoryStore is an in-memory Store for tests and for a registry that need
// not survive a restart. The zero value is not usable; call NewMemoryStore.
type MemoryStore struct {
	mu       sync.Mutex
	rev      uint64
	data     map[string]Entry
	watchers map[chan Entry]*memWatcher
}

type memWatcher struct {
	mu      sync.Mutex
	pending []Entry
	wake    chan struct{}
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty in-memory store.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{data: map[string]Entry{}, watchers: map[chan Entry]*memWatcher{}}
}

// Get implements Store.
func (m *MemoryStore) Get(_ context.Context, key string) (Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.data[key]
	if !ok {
		return Entry{}, ErrKeyNotFound
	}
	return e, nil
}

// Create implements Store.
func (m *MemoryStore) Create(_ context.Context, key string, value []byte) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.data[key]; ok {
		return 0, ErrKeyExists
	}
	return m.write(key, value), nil
}

// Update implements Store.
func (m *MemoryStore) Update(_ context.Context, key string, value []byte, rev uint64) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.data[key].Revision != rev {
		return 0, ErrRevisionMismatch
	}
	return m.write(key, value), nil
}

// Put implements Store.
func (m *MemoryStore) Put(_ context.Context, key string, value []byte) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.write(key, value), nil
}

// Delete implements Store.
func (m *MemoryStore) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.data[key]; !ok {
		return nil
	}
	delete(m.data, key)
	m.rev++
	m.notify(Entry{Key: key, Revision: m.rev, Deleted: true})
	return nil
}

func (m *MemoryStore) write(key string, value []byte) uint64 {
	m.rev++
	e := Entry{Key: key, Value: append([]byte(nil), value...), Revision: m.rev}
	m.data[key] = e
	m.notify(e)
	return m.rev
}

// notify queues e for every watcher; m.mu is held. Queues are unbounded so
// a slow watcher never blocks a writer.
func (m *MemoryStore) notify(e Entry) {
	for _, w := range m.watchers {
		w.mu.Lock()
		w.pending = append(w.pending, e)
		w.mu.Unlock()
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// Watch implements Store.
func (m *MemoryStore) Watch(ctx context.Context) (<-chan Entry, error) {
	w := &memWatcher{wake: make(chan struct{}, 1)}
	out := make(chan Entry)
	m.mu.Lock()
	for _, e := range m.data {
		w.pending = append(w.pending, e)
	}
	w.pending = append(w.pending, Entry{})
	m.watchers[out] = w
	m.mu.Unlock()
	w.wake <- struct{}{}

	go func() {
		defer close(out)
		defer func() {
			m.mu.Lock()
			delete(m.watchers, out)
			m.mu.Unlock()
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case <-w.wake:
			}
			for {
				w.mu.Lock()
				if len(w.pending) == 0 {
					w.mu.Unlock()
					break
				}
				e := w.pending[0]
				w.pending = w.pending[1:]
				w.mu.Unlock()
				select {
				case out <- e:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}
