// Package audit keeps Herald's audit log: an index of every event stored
// in every topic (id, type, source, subject, correlation and causation
// ids, time, position, payload) in SQLite or PostgreSQL, so operators can
// find the events of a business transaction, an aggregate or a type in a
// time range, and the causation tree of a correlation id.
//
// An [Indexer] reads every topic's stream in order and writes batches to a
// [Store]; the stream positions are written in the same transaction as the
// rows, so a restart resumes without gaps or duplicates.
//
//	store, err := audit.OpenSQLite(ctx, filepath.Join(dataDir, "audit.db"))
//	ix, err := audit.NewIndexer(js, store)
//	go ix.Run(ctx)
//	recs, err := ix.Query(ctx, audit.Query{CorrelationID: "c-1"})
package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrInvalidQuery is wrapped by the errors of Query.Validate.
var ErrInvalidQuery = errors.New("audit: invalid query")

// Record is one stored message as the audit log knows it.
type Record struct {
	// Topic and Seq locate the message; Stored is when the broker stored it.
	Topic  string
	Seq    uint64
	Stored time.Time
	// The event's CloudEvents attributes. For a message that is not a
	// CloudEvent, ID is its broker message id and Type its route.
	ID            string
	Type          string
	Source        string
	Subject       string
	CorrelationID string
	CausationID   string
	// Time is the event's time, or Stored when the event has none.
	Time        time.Time
	ContentType string
	// DeadLetter marks a copy in a dead-letter topic; Redrives counts the
	// redrives of a republished event (Herald-Redrives).
	DeadLetter bool
	Redrives   int
	// Payload is the event's data; nil when it was larger than the
	// indexer's payload limit and the stream no longer holds it.
	// PayloadSize is its size in bytes.
	Payload     []byte
	PayloadSize int
	// Cursor marks the record's place in query order (Query.After).
	Cursor string
}

// recordJSON is Record on the wire: the payload as JSON when it is JSON,
// else base64.
type recordJSON struct {
	Topic         string          `json:"topic"`
	Seq           uint64          `json:"seq"`
	Stored        time.Time       `json:"stored"`
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	Source        string          `json:"source,omitempty"`
	Subject       string          `json:"subject,omitempty"`
	CorrelationID string          `json:"correlation_id,omitempty"`
	CausationID   string          `json:"causation_id,omitempty"`
	Time          time.Time       `json:"time"`
	ContentType   string          `json:"content_type,omitempty"`
	DeadLetter    bool            `json:"dead_letter,omitempty"`
	Redrives      int             `json:"redrives,omitempty"`
	PayloadSize   int             `json:"payload_size"`
	Data          json.RawMessage `json:"data,omitempty"`
	DataBase64    []byte          `json:"data_base64,omitempty"`
	Cursor        string          `json:"cursor,omitempty"`
}

// MarshalJSON writes the payload as "data" when it is valid JSON, else as
// "data_base64".
func (r Record) MarshalJSON() ([]byte, error) {
	w := recordJSON{
		Topic: r.Topic, Seq: r.Seq, Stored: r.Stored, ID: r.ID, Type: r.Type, Source: r.Source, Subject: r.Subject,
		CorrelationID: r.CorrelationID, CausationID: r.CausationID, Time: r.Time, ContentType: r.ContentType,
		DeadLetter: r.DeadLetter, Redrives: r.Redrives, PayloadSize: r.PayloadSize, Cursor: r.Cursor,
	}
	if r.Payload != nil {
		if json.Valid(r.Payload) {
			w.Data = r.Payload
		} else {
			w.DataBase64 = r.Payload
		}
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Record) UnmarshalJSON(b []byte) error {
	var w recordJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*r = Record{
		Topic: w.Topic, Seq: w.Seq, Stored: w.Stored, ID: w.ID, Type: w.Type, Source: w.Source, Subject: w.Subject,
		CorrelationID: w.CorrelationID, CausationID: w.CausationID, Time: w.Time, ContentType: w.ContentType,
		DeadLetter: w.DeadLetter, Redrives: w.Redrives, PayloadSize: w.PayloadSize, Cursor: w.Cursor,
	}
	switch {
	case w.Data != nil:
		r.Payload = []byte(w.Data)
	case w.DataBase64 != nil:
		r.Payload = w.DataBase64
	}
	return nil
}

// Position is how far the index has read a stream. Created identifies the
// stream's incarnation: a stream deleted and created again starts over.
type Position struct {
	Stream  string
	Created time.Time
	Seq     uint64
}

// Query selects records: at least one of CorrelationID, Subject and Type
// is required; the other fields narrow it. Records come ordered by Time,
// then by the order they were indexed.
type Query struct {
	CorrelationID string
	Subject       string
	Type          string
	// Topic, when set, keeps only records of this topic.
	Topic string
	// Since (inclusive) and Until (exclusive) bound Time; zero is open.
	Since, Until time.Time
	// After continues a previous query from a record's Cursor.
	After string
	// Limit caps the records returned: default 1000, at most 10000.
	Limit int
	// NoPayload leaves payloads out.
	NoPayload bool
}

// Limits of Query.Limit.
const (
	DefaultLimit = 1000
	MaxLimit     = 10_000
)

// Validate checks q and applies the default limit.
func (q *Query) Validate() error {
	if q.CorrelationID == "" && q.Subject == "" && q.Type == "" {
		return fmt.Errorf("%w: give a correlation id, a subject or a type", ErrInvalidQuery)
	}
	if q.Limit < 0 || q.Limit > MaxLimit {
		return fmt.Errorf("%w: limit %d: want 1 to %d", ErrInvalidQuery, q.Limit, MaxLimit)
	}
	if q.Limit == 0 {
		q.Limit = DefaultLimit
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && !q.Until.After(q.Since) {
		return fmt.Errorf("%w: until %s is not after since %s", ErrInvalidQuery, q.Until.Format(time.RFC3339Nano), q.Since.Format(time.RFC3339Nano))
	}
	if q.After != "" {
		if _, _, err := parseCursor(q.After); err != nil {
			return err
		}
	}
	for _, s := range []string{q.CorrelationID, q.Subject, q.Type, q.Topic} {
		if len(s) > 1024 {
			return fmt.Errorf("%w: a filter is longer than 1024 bytes", ErrInvalidQuery)
		}
	}
	return nil
}

// formatCursor and parseCursor: "<time unix ns>-<row number>".
func formatCursor(timeNS, n int64) string {
	return strconv.FormatInt(timeNS, 10) + "-" + strconv.FormatInt(n, 10)
}

func parseCursor(c string) (timeNS, n int64, err error) {
	a, b, ok := strings.Cut(c, "-")
	if ok {
		timeNS, err = strconv.ParseInt(a, 10, 64)
		if err == nil {
			n, err = strconv.ParseInt(b, 10, 64)
		}
	}
	if !ok || err != nil || n < 0 {
		return 0, 0, fmt.Errorf("%w: cursor %q is not one this server returned", ErrInvalidQuery, c)
	}
	return timeNS, n, nil
}

// Store keeps the index. Implementations are safe for concurrent use.
type Store interface {
	// Write adds recs and records the positions, atomically.
	Write(ctx context.Context, recs []Record, pos []Position) error
	// Positions returns the recorded position of every stream, by name.
	Positions(ctx context.Context) (map[string]Position, error)
	// Query returns the records q selects (q is valid).
	Query(ctx context.Context, q Query) ([]Record, error)
	// Close releases the store.
	Close() error
}

// where builds the WHERE clause of q; ph returns the placeholder of the
// i-th argument (1-based).
func where(q Query, ph func(int) string) (string, []any) {
	var conds []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		conds = append(conds, strings.ReplaceAll(cond, "?", ph(len(args))))
	}
	// The "<> ''" terms let the planners use the partial indexes.
	if q.CorrelationID != "" {
		add("correlation_id = ?", q.CorrelationID)
		conds = append(conds, "correlation_id <> ''")
	}
	if q.Subject != "" {
		add("subject = ?", q.Subject)
		conds = append(conds, "subject <> ''")
	}
	if q.Type != "" {
		add("type = ?", q.Type)
	}
	if q.Topic != "" {
		add("topic = ?", q.Topic)
	}
	if !q.Since.IsZero() {
		add("time_ns >= ?", q.Since.UnixNano())
	}
	if !q.Until.IsZero() {
		add("time_ns < ?", q.Until.UnixNano())
	}
	if q.After != "" {
		t, n, _ := parseCursor(q.After)
		args = append(args, t, t, n)
		i := len(args)
		conds = append(conds, fmt.Sprintf("(time_ns > %s OR (time_ns = %s AND n > %s))", ph(i-2), ph(i-1), ph(i)))
	}
	return strings.Join(conds, " AND "), args
}

// Node is an event in a causation tree.
type Node struct {
	Record
	// DeadLettered: a copy of the event is (or was) in a dead-letter topic.
	DeadLettered bool `json:"dead_lettered,omitempty"`
	// Redriven counts the copies republished by a redrive.
	Redriven int     `json:"redriven,omitempty"`
	Children []*Node `json:"children,omitempty"`
}

// MarshalJSON flattens the record's fields into the node.
func (n *Node) MarshalJSON() ([]byte, error) {
	rec, err := json.Marshal(n.Record)
	if err != nil {
		return nil, err
	}
	extra, err := json.Marshal(struct {
		DeadLettered bool    `json:"dead_lettered,omitempty"`
		Redriven     int     `json:"redriven,omitempty"`
		Children     []*Node `json:"children,omitempty"`
	}{n.DeadLettered, n.Redriven, n.Children})
	if err != nil {
		return nil, err
	}
	if string(extra) == "{}" {
		return rec, nil
	}
	return append(append(rec[:len(rec)-1], ','), extra[1:]...), nil
}

// UnmarshalJSON reads what MarshalJSON writes.
func (n *Node) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &n.Record); err != nil {
		return err
	}
	var extra struct {
		DeadLettered bool    `json:"dead_lettered"`
		Redriven     int     `json:"redriven"`
		Children     []*Node `json:"children"`
	}
	if err := json.Unmarshal(b, &extra); err != nil {
		return err
	}
	n.DeadLettered, n.Redriven, n.Children = extra.DeadLettered, extra.Redriven, extra.Children
	return nil
}

// Tree builds the causation trees of recs (in query order): an event is a
// child of the event its causation id names when that event came before
// it, else a root. Copies of one event id (dead letters, redrives) fold
// into the first one seen.
func Tree(recs []Record) []*Node {
	byID := make(map[string]*Node, len(recs))
	var order []*Node
	for _, r := range recs {
		n := byID[r.ID]
		if n == nil {
			n = &Node{Record: r}
			byID[r.ID] = n
			order = append(order, n)
			if r.DeadLetter {
				n.DeadLettered = true
			}
			continue
		}
		switch {
		case r.DeadLetter:
			n.DeadLettered = true
		case r.Redrives > 0:
			n.Redriven++
		}
		if n.Record.DeadLetter && !r.DeadLetter {
			// Prefer the event as published over its dead-letter copy.
			n.Record = r
		}
	}
	seen := make(map[string]bool, len(order))
	var roots []*Node
	for _, n := range order {
		parent := byID[n.CausationID]
		if parent != nil && n.CausationID != n.ID && seen[n.CausationID] {
			parent.Children = append(parent.Children, n)
		} else {
			roots = append(roots, n)
		}
		seen[n.ID] = true
	}
	return roots
}
