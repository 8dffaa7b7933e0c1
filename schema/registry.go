package schema

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/heraldhq/herald/schema/internal/compat"
)

// Registry is a Confluent-compatible schema registry: subjects with
// versions, schemas with global ids that are never reused, soft and
// permanent deletes, references, compatibility levels and modes.
//
// It keeps the whole state in memory, loaded from its Store when created
// and kept current by watching the store, and writes through the store
// with revision checks, so several registries may share one store without
// handing out the same id or version twice.
//
// A Registry is safe for concurrent use. Close stops its watch.
type Registry struct {
	store        Store
	log          *slog.Logger
	checkTimeout time.Duration
	maxSchema    int

	cancel context.CancelFunc
	done   chan struct{}

	mu sync.RWMutex
	st *state

	parsedMu sync.Mutex
	parsed   map[int]Parsed

	memoMu sync.Mutex
	memo   map[memoKey][]Incompatibility
}

type memoKey struct {
	newFP string
	oldID int
	dir   compat.Direction
}

const memoLimit = 4096

// Option configures a Registry.
type Option func(*Registry)

// WithLogger sets the logger. Default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(r *Registry) { r.log = l } }

// WithCheckTimeout bounds one compatibility comparison between two
// schemas; a comparison that does not finish in time counts as
// incompatible, with a message saying so. Default 10s.
func WithCheckTimeout(d time.Duration) Option { return func(r *Registry) { r.checkTimeout = d } }

// WithMaxSchemaSize limits the size of a schema's text in bytes. Default
// 1 MiB.
func WithMaxSchemaSize(n int) Option { return func(r *Registry) { r.maxSchema = n } }

// New returns a registry on store, after loading the store's whole state.
// It watches the store for changes made by other registries until Close.
func New(ctx context.Context, store Store, opts ...Option) (*Registry, error) {
	if store == nil {
		return nil, errors.New("schema: New: nil store (use schema.NewMemoryStore or schema.NewKVStore)")
	}
	r := &Registry{
		store:        store,
		log:          slog.Default(),
		checkTimeout: 10 * time.Second,
		maxSchema:    1 << 20,
		st:           newState(),
		parsed:       map[int]Parsed{},
		memo:         map[memoKey][]Incompatibility{},
		done:         make(chan struct{}),
	}
	for _, o := range opts {
		o(r)
	}
	if r.checkTimeout <= 0 {
		return nil, fmt.Errorf("schema: WithCheckTimeout(%v): must be positive", r.checkTimeout)
	}
	if r.maxSchema <= 0 {
		return nil, fmt.Errorf("schema: WithMaxSchemaSize(%d): must be positive", r.maxSchema)
	}
	wctx, cancel := context.WithCancel(context.Background())
	ch, err := store.Watch(wctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("schema: load state: %w", err)
	}
	r.cancel = cancel
	// Initial state: everything up to the empty marker.
	for loaded := false; !loaded; {
		select {
		case e, ok := <-ch:
			if !ok {
				cancel()
				return nil, errors.New("schema: load state: watch closed before the initial state was read")
			}
			if e.Key == "" {
				loaded = true
				break
			}
			r.st.apply(e)
		case <-ctx.Done():
			cancel()
			for range ch {
			}
			return nil, fmt.Errorf("schema: load state: %w", ctx.Err())
		}
	}
	go func() {
		defer close(r.done)
		for e := range ch {
			r.mu.Lock()
			r.st.apply(e)
			r.mu.Unlock()
		}
		if wctx.Err() == nil {
			r.log.Warn("schema: store watch ended; this registry no longer sees other registries' writes until restarted")
		}
	}()
	return r, nil
}

// Close stops watching the store and waits for the watch to end. It does
// not close the store.
func (r *Registry) Close() error {
	r.cancel()
	<-r.done
	return nil
}

func (r *Registry) applyWrite(key string, value []byte, rev uint64) {
	r.mu.Lock()
	r.st.apply(Entry{Key: key, Value: value, Revision: rev})
	r.mu.Unlock()
}

func (r *Registry) applyDelete(key string) {
	r.mu.Lock()
	r.st.apply(Entry{Key: key, Deleted: true, Revision: r.st.revs[key] + 1})
	r.mu.Unlock()
}

// refresh reads key from the store and applies it (after a conflict).
func (r *Registry) refresh(ctx context.Context, key string) error {
	e, err := r.store.Get(ctx, key)
	if errors.Is(err, ErrKeyNotFound) {
		r.mu.RLock()
		_, known := r.st.revs[key]
		r.mu.RUnlock()
		if known {
			r.applyDelete(key)
		}
		return nil
	}
	if err != nil {
		return storeError(err, "schema: read %s", key)
	}
	r.applyWrite(key, e.Value, e.Revision)
	if strings.HasPrefix(key, "subjects.") {
		// A version another registry wrote: make sure its schema is known
		// even if the watch has not delivered it yet.
		var d versionDoc
		if json.Unmarshal(e.Value, &d) == nil {
			r.mu.RLock()
			known := r.st.schemas[d.ID] != nil
			r.mu.RUnlock()
			if !known {
				return r.refresh(ctx, keySchema(d.ID))
			}
		}
	}
	return nil
}

// ValidateSubject returns an ErrInvalidSubject error for a subject name the
// registry refuses: empty, longer than 512 bytes, not UTF-8, or with
// control characters.
func ValidateSubject(subject string) error {
	if subject == "" || len(subject) > 512 || !utf8.ValidString(subject) ||
		strings.IndexFunc(subject, unicode.IsControl) >= 0 {
		return newError(ErrInvalidSubject, "invalid subject %q: want 1 to 512 bytes of UTF-8 without control characters", subject)
	}
	return nil
}

// ---- reads

// Subjects returns the subjects with at least one live version (with
// deleted, also those with only soft-deleted versions), sorted, keeping
// only those starting with prefix.
func (r *Registry) Subjects(deleted bool, prefix string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := []string{}
	for name, s := range r.st.subjects {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		for _, v := range s.versions {
			if deleted || !v.Deleted {
				out = append(out, name)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// versionsLocked returns the subject's versions, oldest first; r.mu is held.
func (r *Registry) versionsLocked(subject string, deleted bool) []*versionDoc {
	s := r.st.subjects[subject]
	if s == nil {
		return nil
	}
	out := make([]*versionDoc, 0, len(s.versions))
	for _, v := range s.versions {
		if deleted || !v.Deleted {
			out = append(out, v)
		}
	}
	slices.SortFunc(out, func(a, b *versionDoc) int { return a.Version - b.Version })
	return out
}

func (r *Registry) subjectVersion(v *versionDoc) SubjectVersion {
	sv := SubjectVersion{Subject: v.Subject, Version: v.Version, ID: v.ID, Deleted: v.Deleted}
	if rec := r.st.schemas[v.ID]; rec != nil {
		sv.Schema = rec.schema()
	}
	return sv
}

// Versions returns the subject's version numbers, oldest first; soft-deleted
// ones only with deleted. ErrSubjectNotFound if there are none.
func (r *Registry) Versions(subject string, deleted bool) ([]int, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	vs := r.versionsLocked(subject, deleted)
	if len(vs) == 0 {
		return nil, newError(ErrSubjectNotFound, "subject %q not found", subject)
	}
	out := make([]int, len(vs))
	for i, v := range vs {
		out[i] = v.Version
	}
	return out, nil
}

// Latest is the version number that means "the latest version".
const Latest = -1

// Version returns one version of subject (Latest for the newest live one).
// A soft-deleted version is returned only with deleted.
func (r *Registry) Version(subject string, version int, deleted bool) (SubjectVersion, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	v, err := r.findVersionLocked(subject, version, deleted)
	if err != nil {
		return SubjectVersion{}, err
	}
	if r.st.schemas[v.ID] == nil {
		// The store holds the version but not its schema (written by hand,
		// or lost): an empty schema would read as a valid answer.
		return SubjectVersion{}, newError(ErrSchemaNotFound, "subject %q version %d refers to schema id %d, which the store does not hold", subject, v.Version, v.ID)
	}
	return r.subjectVersion(v), nil
}

func (r *Registry) findVersionLocked(subject string, version int, deleted bool) (*versionDoc, error) {
	if version != Latest && version <= 0 {
		return nil, newError(ErrInvalidVersion, "invalid version %d: want a positive number or \"latest\"", version)
	}
	all := r.versionsLocked(subject, true)
	if len(all) == 0 {
		return nil, newError(ErrSubjectNotFound, "subject %q not found", subject)
	}
	if version == Latest {
		for i := len(all) - 1; i >= 0; i-- {
			if deleted || !all[i].Deleted {
				return all[i], nil
			}
		}
		return nil, newError(ErrSubjectNotFound, "subject %q not found (every version is soft-deleted)", subject)
	}
	for _, v := range all {
		if v.Version == version {
			if v.Deleted && !deleted {
				return nil, newError(ErrVersionNotFound, "subject %q version %d not found (soft-deleted)", subject, version)
			}
			return v, nil
		}
	}
	return nil, newError(ErrVersionNotFound, "subject %q version %d not found", subject, version)
}

// SchemaByID returns the schema with id. A schema stays readable by id
// while any version (live or soft-deleted) uses it, so consumers can
// decode old data; once every version using it is permanently deleted it
// is ErrSchemaNotFound. The id is never given to another schema.
func (r *Registry) SchemaByID(id int) (Schema, error) {
	r.mu.RLock()
	rec := r.st.schemas[id]
	used := r.st.usage[id] > 0
	r.mu.RUnlock()
	if rec == nil || !used {
		return Schema{}, newError(ErrSchemaNotFound, "schema id %d not found", id)
	}
	return rec.schema(), nil
}

// SubjectVersionRef is a subject and version pair.
type SubjectVersionRef struct {
	Subject string `json:"subject"`
	Version int    `json:"version"`
}

// VersionsByID returns the subject-versions that use schema id, sorted;
// soft-deleted ones only with deleted.
func (r *Registry) VersionsByID(id int, deleted bool) ([]SubjectVersionRef, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.st.schemas[id] == nil || r.st.usage[id] == 0 {
		return nil, newError(ErrSchemaNotFound, "schema id %d not found", id)
	}
	out := []SubjectVersionRef{}
	for name, s := range r.st.subjects {
		for _, v := range s.versions {
			if v.ID == id && (deleted || !v.Deleted) {
				out = append(out, SubjectVersionRef{Subject: name, Version: v.Version})
			}
		}
	}
	slices.SortFunc(out, func(a, b SubjectVersionRef) int {
		if c := strings.Compare(a.Subject, b.Subject); c != 0 {
			return c
		}
		return a.Version - b.Version
	})
	return out, nil
}

// SubjectsByID returns the subjects that use schema id, sorted.
func (r *Registry) SubjectsByID(id int, deleted bool) ([]string, error) {
	vs, err := r.VersionsByID(id, deleted)
	if err != nil {
		return nil, err
	}
	out := []string{}
	for _, v := range vs {
		if len(out) == 0 || out[len(out)-1] != v.Subject {
			out = append(out, v.Subject)
		}
	}
	return out, nil
}

// ReferencedBy returns the ids of the live schemas that reference subject
// at version (Latest for the newest), sorted.
func (r *Registry) ReferencedBy(subject string, version int) ([]int, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	v, err := r.findVersionLocked(subject, version, true)
	if err != nil {
		return nil, err
	}
	return r.referencedByLocked(subject, v.Version), nil
}

func (r *Registry) referencedByLocked(subject string, version int) []int {
	ids := []int{}
	for _, s := range r.st.subjects {
		for _, v := range s.versions {
			if v.Deleted {
				continue
			}
			rec := r.st.schemas[v.ID]
			if rec == nil || slices.Contains(ids, v.ID) {
				continue
			}
			for _, ref := range rec.refs {
				if ref.Subject == subject && ref.Version == version {
					ids = append(ids, v.ID)
					break
				}
			}
		}
	}
	slices.Sort(ids)
	return ids
}

// ---- config and mode

// Config returns the subject's compatibility level, or the global one for
// subject "". A subject without its own level is ErrSubjectLevelConfigMissing
// unless defaultToGlobal.
func (r *Registry) Config(subject string, defaultToGlobal bool) (Level, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if subject != "" {
		if s := r.st.subjects[subject]; s != nil && s.level != "" {
			return s.level, nil
		}
		if !defaultToGlobal {
			return "", newError(ErrSubjectLevelConfigMissing, "subject %q has no compatibility level of its own", subject)
		}
	}
	return r.globalLevelLocked(), nil
}

func (r *Registry) globalLevelLocked() Level {
	if r.st.globalLevel != "" {
		return r.st.globalLevel
	}
	return DefaultLevel
}

func (r *Registry) levelLocked(subject string) Level {
	if s := r.st.subjects[subject]; s != nil && s.level != "" {
		return s.level
	}
	return r.globalLevelLocked()
}

// SetConfig sets the subject's compatibility level (the global one for "").
func (r *Registry) SetConfig(ctx context.Context, subject string, level Level) error {
	if _, err := ParseLevel(string(level)); err != nil {
		return err
	}
	key := keyGlobalConfig
	if subject != "" {
		if err := ValidateSubject(subject); err != nil {
			return err
		}
		key = keySubjectConfig(subject)
	}
	if err := r.writable(subject); err != nil {
		return err
	}
	return r.put(ctx, key, configDoc{Level: level})
}

// DeleteConfig removes the subject's own level (resetting the global one
// to DefaultLevel for "") and returns the level it had.
func (r *Registry) DeleteConfig(ctx context.Context, subject string) (Level, error) {
	prev, err := r.Config(subject, false)
	if err != nil {
		return "", err
	}
	if err := r.writable(subject); err != nil {
		return "", err
	}
	key := keyGlobalConfig
	if subject != "" {
		key = keySubjectConfig(subject)
	}
	if err := r.del(ctx, key); err != nil {
		return "", err
	}
	return prev, nil
}

// Mode returns the subject's mode, or the global one for "". A subject
// without its own mode is ErrSubjectLevelModeMissing unless defaultToGlobal.
func (r *Registry) Mode(subject string, defaultToGlobal bool) (Mode, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if subject != "" {
		if s := r.st.subjects[subject]; s != nil && s.mode != "" {
			return s.mode, nil
		}
		if !defaultToGlobal {
			return "", newError(ErrSubjectLevelModeMissing, "subject %q has no mode of its own", subject)
		}
	}
	return r.globalModeLocked(), nil
}

func (r *Registry) globalModeLocked() Mode {
	if r.st.globalMode != "" {
		return r.st.globalMode
	}
	return ReadWrite
}

func (r *Registry) modeLocked(subject string) Mode {
	if s := r.st.subjects[subject]; s != nil && s.mode != "" {
		return s.mode
	}
	return r.globalModeLocked()
}

// SetMode sets the subject's mode (the global one for ""). Switching to
// IMPORT needs an empty subject (an empty registry for the global mode)
// unless force.
func (r *Registry) SetMode(ctx context.Context, subject string, mode Mode, force bool) error {
	if _, err := ParseMode(string(mode)); err != nil {
		return err
	}
	key := keyGlobalMode
	if subject != "" {
		if err := ValidateSubject(subject); err != nil {
			return err
		}
		key = keySubjectMode(subject)
	}
	if mode == Import && !force {
		var nonEmpty bool
		if subject == "" {
			nonEmpty = len(r.Subjects(true, "")) > 0
		} else {
			r.mu.RLock()
			nonEmpty = len(r.versionsLocked(subject, true)) > 0
			r.mu.RUnlock()
		}
		if nonEmpty {
			what := "the registry"
			if subject != "" {
				what = fmt.Sprintf("subject %q", subject)
			}
			return newError(ErrOperationNotPermitted, "cannot switch %s to IMPORT mode: it already holds schemas (use force)", what)
		}
	}
	return r.put(ctx, key, modeDoc{Mode: mode})
}

// DeleteMode removes the subject's own mode (resetting the global mode to
// READWRITE for "") and returns the mode it had.
func (r *Registry) DeleteMode(ctx context.Context, subject string) (Mode, error) {
	prev, err := r.Mode(subject, false)
	if err != nil {
		return "", err
	}
	key := keyGlobalMode
	if subject != "" {
		key = keySubjectMode(subject)
	}
	if err := r.del(ctx, key); err != nil {
		return "", err
	}
	return prev, nil
}

// writable refuses writes to a READONLY subject (or registry).
func (r *Registry) writable(subject string) error {
	r.mu.RLock()
	m := r.modeLocked(subject)
	r.mu.RUnlock()
	if m == ReadOnly {
		if subject == "" {
			return newError(ErrOperationNotPermitted, "the registry is in READONLY mode")
		}
		return newError(ErrOperationNotPermitted, "subject %q is in READONLY mode", subject)
	}
	return nil
}

func (r *Registry) put(ctx context.Context, key string, doc any) error {
	b, err := json.Marshal(doc)
	if err != nil {
		return storeError(err, "schema: encode %s", key)
	}
	rev, err := r.store.Put(ctx, key, b)
	if err != nil {
		return storeError(err, "schema: write %s", key)
	}
	r.applyWrite(key, b, rev)
	return nil
}

func (r *Registry) del(ctx context.Context, key string) error {
	if err := r.store.Delete(ctx, key); err != nil {
		return storeError(err, "schema: delete %s", key)
	}
	r.applyDelete(key)
	return nil
}

// MaxID returns the largest schema id handed out so far.
func (r *Registry) MaxID() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return max(r.st.nextID, r.st.maxID)
}
