package eventstore

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"regexp"
	"time"

	"github.com/heraldhq/herald/event"
)

// Errors callers branch on, matched with errors.Is.
var (
	// ErrConflict means the stream's version was not the expected one.
	// The error is a *ConflictError naming both versions.
	ErrConflict = errors.New("eventstore: version conflict")
	// ErrDeleted means the stream is tombstoned: it can be neither read
	// nor appended to again.
	ErrDeleted = errors.New("eventstore: stream is tombstoned")
	// ErrNotFound means the stream (or the record asked for) does not
	// exist or is hidden by the stream's metadata.
	ErrNotFound = errors.New("eventstore: not found")
	// ErrInvalid is wrapped by errors about bad arguments: a malformed
	// stream name, an event without a type, an unknown expected-version
	// mode. Nothing is written when it is returned.
	ErrInvalid = errors.New("eventstore: invalid argument")
)

// Store is an event store. Implementations are safe for concurrent use,
// including by several processes sharing one backend.
//
// Versions count the events of one stream: the first event is version 1,
// and a stream that never had an event is at version 0. Positions order
// every event of the store; they increase in the order ReadAll returns
// events but need not be contiguous.
type Store interface {
	// Append adds events to the end of stream, atomically: all of them
	// or none. The stream's version must satisfy expected, or Append fails
	// with a *ConflictError. Events whose id is already stored in the
	// stream are skipped, so a retried Append stores each event once; if
	// every event is skipped, Append writes nothing and succeeds without
	// checking expected. Appending to a tombstoned stream fails with
	// ErrDeleted. An Append without events only checks expected.
	//
	// Append validates every event (id, source and type are required)
	// and sets Sequence to its version and, if empty, Subject to stream;
	// the caller's events are not modified.
	Append(ctx context.Context, stream string, expected Expected, events ...*event.Event) (AppendResult, error)
	// Load yields stream's events with a version greater than after, in
	// version order, as far as the stream's metadata lets them be seen
	// (see Metadata). A stream that does not exist yields nothing. A
	// tombstoned stream yields ErrDeleted. The first error ends the
	// iteration.
	Load(ctx context.Context, stream string, after uint64) iter.Seq2[*Record, error]
	// ReadAll yields the events of every stream with a position greater
	// than after, in position order. A reader that records the position
	// of the last event it handled and resumes from it misses no event,
	// even when appends commit out of order. Stream metadata does not
	// filter ReadAll.
	ReadAll(ctx context.Context, after uint64) iter.Seq2[*Record, error]
	// Last returns the last event of stream, or ErrNotFound when the
	// stream has none it lets be seen.
	Last(ctx context.Context, stream string) (*Record, error)
	// Info returns the stream's version and metadata. A stream that does
	// not exist has version 0 and no error.
	Info(ctx context.Context, stream string) (StreamInfo, error)
	// SetMetadata replaces the stream's metadata. It cannot undo a
	// tombstone: a tombstoned stream returns ErrDeleted.
	SetMetadata(ctx context.Context, stream string, meta Metadata) error
	// Delete soft-deletes stream: its events so far are hidden from Load
	// (TruncateBefore is set past its version). Appending again revives
	// it, continuing its versions.
	Delete(ctx context.Context, stream string) error
	// Tombstone deletes stream for good: later reads and appends fail
	// with ErrDeleted. Its events stay in ReadAll.
	Tombstone(ctx context.Context, stream string) error
}

// Waiter is implemented by stores that can signal new events, so that
// Subscribe need not poll.
type Waiter interface {
	// Wait returns once an event with a position greater than after may
	// exist, or when ctx ends (with its error).
	Wait(ctx context.Context, after uint64) error
}

// Positioner is implemented by stores that can tell where their global
// order ends, so that a reader can say how far behind it is. All three of
// Herald's stores implement it.
type Positioner interface {
	// LastPosition returns the position of the newest event stored (0
	// when there is none): a reader whose checkpoint is at it has read
	// every event stored so far. Positions need not be contiguous, so
	// the difference to a checkpoint bounds, and does not count, the
	// events still to read.
	LastPosition(ctx context.Context) (uint64, error)
}

// Record is a stored event.
type Record struct {
	// Stream is the stream the event belongs to.
	Stream string
	// Version is the event's version in its stream, from 1.
	Version uint64
	// Position is the event's place in the store's global order.
	Position uint64
	// Recorded is when the store wrote the event.
	Recorded time.Time
	// Event is the event, with Sequence set to Version.
	Event *event.Event
}

// AppendResult is what Append did.
type AppendResult struct {
	// Version is the stream's version after the append.
	Version uint64
	// Position is the position of the last event written; 0 when Append
	// wrote nothing.
	Position uint64
	// Written is how many events were written: fewer than given when some
	// were already stored.
	Written int
}

// StreamInfo describes a stream.
type StreamInfo struct {
	// Stream is the stream's name.
	Stream string
	// Version is the version of its last event; 0 if it has none.
	Version uint64
	// Metadata is the stream's metadata.
	Metadata Metadata
}

// Metadata limits what Load and Last return of a stream. Limits hide
// events; they do not remove them from the backend, and ReadAll still
// returns them. The zero value sets no limit.
type Metadata struct {
	// MaxAge hides events recorded longer ago than this. 0: no limit.
	MaxAge time.Duration `json:"maxAge,omitempty"`
	// MaxCount keeps only the last MaxCount events visible. 0: no limit.
	MaxCount uint64 `json:"maxCount,omitempty"`
	// TruncateBefore hides events with a lower version. Delete sets it.
	TruncateBefore uint64 `json:"truncateBefore,omitempty"`
	// Tombstoned is set by Tombstone and cannot be cleared.
	Tombstoned bool `json:"tombstoned,omitempty"`
}

// Visible reports whether the metadata lets an event be seen: version
// and recorded are the event's, last is the stream's version and now the
// current time.
func (m Metadata) Visible(version uint64, recorded time.Time, last uint64, now time.Time) bool {
	if m.Tombstoned || version < m.TruncateBefore {
		return false
	}
	if m.MaxCount > 0 && last >= m.MaxCount && version <= last-m.MaxCount {
		return false
	}
	if m.MaxAge > 0 && recorded.Before(now.Add(-m.MaxAge)) {
		return false
	}
	return true
}

// FirstVisible returns the lowest version the metadata can let be seen
// when the stream is at version last, ignoring MaxAge.
func (m Metadata) FirstVisible(last uint64) uint64 {
	first := max(m.TruncateBefore, 1)
	if m.MaxCount > 0 && last >= m.MaxCount {
		first = max(first, last-m.MaxCount+1)
	}
	return first
}

// Validate reports a metadata value Append cannot store.
func (m Metadata) Validate() error {
	if m.MaxAge < 0 {
		return fmt.Errorf("%w: metadata MaxAge %v is negative", ErrInvalid, m.MaxAge)
	}
	return nil
}

type mode uint8

const (
	modeInvalid mode = iota
	modeAny
	modeNoStream
	modeStreamExists
	modeExact
)

// Expected is the version Append expects a stream to be at. The zero
// value is invalid: Append rejects it with ErrInvalid.
type Expected struct {
	mode    mode
	version uint64
}

// The expected-version modes without a number.
var (
	// Any appends whatever the stream's version.
	Any = Expected{mode: modeAny}
	// NoStream appends only to a stream that has no event yet.
	NoStream = Expected{mode: modeNoStream}
	// StreamExists appends only to a stream that has at least one event.
	StreamExists = Expected{mode: modeStreamExists}
)

// Exact appends only when the stream is at version n. Exact(0) is
// NoStream.
func Exact(n uint64) Expected {
	if n == 0 {
		return NoStream
	}
	return Expected{mode: modeExact, version: n}
}

// String describes the expectation: "any", "no stream", "stream exists"
// or the version number.
func (e Expected) String() string {
	switch e.mode {
	case modeAny:
		return "any"
	case modeNoStream:
		return "no stream"
	case modeStreamExists:
		return "stream exists"
	case modeExact:
		return fmt.Sprint(e.version)
	}
	return "invalid"
}

// Version returns the exact version expected, and whether the mode is
// Exact or NoStream (which expects 0).
func (e Expected) Version() (uint64, bool) {
	switch e.mode {
	case modeExact:
		return e.version, true
	case modeNoStream:
		return 0, true
	}
	return 0, false
}

// Validate reports an expected value that is not one of the modes.
func (e Expected) Validate() error {
	if e.mode == modeInvalid || e.mode > modeExact {
		return fmt.Errorf("%w: unknown expected-version mode (use Any, NoStream, StreamExists or Exact)", ErrInvalid)
	}
	return nil
}

// Check returns a *ConflictError when a stream at version actual does not
// meet the expectation.
func (e Expected) Check(stream string, actual uint64) error {
	ok := false
	switch e.mode {
	case modeAny:
		ok = true
	case modeNoStream:
		ok = actual == 0
	case modeStreamExists:
		ok = actual > 0
	case modeExact:
		ok = actual == e.version
	}
	if ok {
		return nil
	}
	return &ConflictError{Stream: stream, Expected: e, Actual: actual}
}

// ConflictError is the error of an Append whose expected version did not
// hold. It matches ErrConflict.
type ConflictError struct {
	Stream   string
	Expected Expected
	Actual   uint64
}

// Error says which stream, what was expected and what the version was.
func (e *ConflictError) Error() string {
	return fmt.Sprintf("eventstore: stream %q: expected version %s, actual %d: version conflict", e.Stream, e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrConflict) hold.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// MaxStreamLen is the longest stream name a store accepts.
const MaxStreamLen = 200

var streamRE = regexp.MustCompile(`^[A-Za-z0-9_\-:@=+]+(\.[A-Za-z0-9_\-:@=+]+)*$`)

// ValidateStream reports a stream name stores do not accept: names are 1
// to MaxStreamLen ASCII letters, digits and any of "_-:@=+", in tokens
// separated by single dots ("order-42", "shop.order:42").
func ValidateStream(stream string) error {
	if stream == "" {
		return fmt.Errorf("%w: stream name is empty", ErrInvalid)
	}
	if len(stream) > MaxStreamLen {
		return fmt.Errorf("%w: stream name %.40q... is longer than %d bytes", ErrInvalid, stream, MaxStreamLen)
	}
	if !streamRE.MatchString(stream) {
		return fmt.Errorf("%w: stream name %q: use ASCII letters, digits and _-:@=+, in tokens separated by single dots", ErrInvalid, stream)
	}
	return nil
}

// Prepare validates an Append's arguments and returns copies of the
// events with Subject defaulted to stream; the store sets Sequence. It is
// for Store implementations.
func Prepare(stream string, expected Expected, events []*event.Event) ([]*event.Event, error) {
	if err := ValidateStream(stream); err != nil {
		return nil, err
	}
	if err := expected.Validate(); err != nil {
		return nil, err
	}
	out := make([]*event.Event, len(events))
	seen := make(map[string]struct{}, len(events))
	for i, e := range events {
		if e == nil {
			return nil, fmt.Errorf("%w: stream %q: event %d is nil", ErrInvalid, stream, i)
		}
		if err := e.Validate(); err != nil {
			return nil, fmt.Errorf("%w: stream %q: event %d (id %q): %w", ErrInvalid, stream, i, e.ID, err)
		}
		if _, dup := seen[e.ID]; dup {
			return nil, fmt.Errorf("%w: stream %q: event id %q given twice in one append", ErrInvalid, stream, e.ID)
		}
		seen[e.ID] = struct{}{}
		c := e.Clone()
		if c.Subject == "" {
			c.Subject = stream
		}
		out[i] = c
	}
	return out, nil
}

// Collect drains an iterator into a slice, stopping at the first error.
func Collect(seq iter.Seq2[*Record, error]) ([]*Record, error) {
	var out []*Record
	for r, err := range seq {
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}
