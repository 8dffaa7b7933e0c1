package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/heraldhq/herald/eventstore"
	esnats "github.com/heraldhq/herald/eventstore/natsjs"
)

// Bounds of a page of stream events.
const (
	DefaultStreamLimit = 100
	MaxStreamLimit     = 1000
)

// WithEventStore names the JetStream stream and subject prefix of the
// event store `herald stream show` reads. Default esnats.DefaultStream
// and esnats.DefaultPrefix, what eventstore/natsjs.New uses.
func WithEventStore(stream, prefix string) Option {
	return func(s *Service) { s.es.stream, s.es.prefix = stream, prefix }
}

// eventStore opens the natsjs event store once it exists.
type eventStore struct {
	stream, prefix string
	mu             sync.Mutex
	st             *esnats.Store
}

func (s *Service) eventStore(ctx context.Context) (*esnats.Store, error) {
	s.es.mu.Lock()
	defer s.es.mu.Unlock()
	if s.es.st != nil {
		return s.es.st, nil
	}
	var opts []esnats.Option
	if s.es.stream != "" {
		opts = append(opts, esnats.WithStream(s.es.stream))
	}
	if s.es.prefix != "" {
		opts = append(opts, esnats.WithPrefix(s.es.prefix))
	}
	st, err := esnats.Open(ctx, s.nc, opts...)
	if errors.Is(err, eventstore.ErrNotFound) {
		return nil, fmt.Errorf("admin: %w: %w", ErrNotFound, err)
	}
	if err != nil {
		return nil, fmt.Errorf("admin: event store: %w", err)
	}
	s.es.st = st
	return st, nil
}

// StreamEvent is one event of an event-sourced stream. Data holds a JSON
// payload as it is; any other payload is in DataBase64 (as in the
// CloudEvents JSON format).
type StreamEvent struct {
	Version       uint64          `json:"version"`
	Position      uint64          `json:"position"`
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	Source        string          `json:"source"`
	Subject       string          `json:"subject,omitempty"`
	Time          time.Time       `json:"time"`
	Recorded      time.Time       `json:"recorded"`
	CorrelationID string          `json:"correlation_id,omitempty"`
	CausationID   string          `json:"causation_id,omitempty"`
	DataSchema    string          `json:"dataschema,omitempty"`
	ContentType   string          `json:"content_type,omitempty"`
	Data          json.RawMessage `json:"data,omitempty"`
	DataBase64    []byte          `json:"data_base64,omitempty"`
}

// StreamPage is a page of a stream's events, oldest first. Next is the
// version the next page starts from (0 when this page reaches the end).
type StreamPage struct {
	Stream   string              `json:"stream"`
	Version  uint64              `json:"version"`
	Metadata eventstore.Metadata `json:"metadata"`
	Events   []StreamEvent       `json:"events"`
	Next     uint64              `json:"next,omitempty"`
}

func streamEvent(r *eventstore.Record) StreamEvent {
	e := r.Event
	se := StreamEvent{Version: r.Version, Position: r.Position, ID: e.ID, Type: e.Type, Source: e.Source, Subject: e.Subject,
		Time: e.Time, Recorded: r.Recorded.UTC(), CorrelationID: e.CorrelationID, CausationID: e.CausationID,
		DataSchema: e.DataSchema, ContentType: e.DataContentType}
	if len(e.Data) > 0 {
		if json.Valid(e.Data) {
			se.Data = json.RawMessage(e.Data)
		} else {
			se.DataBase64 = e.Data
		}
	}
	return se
}

// StreamEvents returns up to limit events of the event-sourced stream,
// from version from (1 when 0) on, as far as the stream's metadata lets
// them be seen. A stream without events, or a tombstoned one, is an error
// wrapping ErrNotFound; a malformed name or limit, ErrInvalid.
func (s *Service) StreamEvents(ctx context.Context, stream string, from uint64, limit int) (*StreamPage, error) {
	if err := eventstore.ValidateStream(stream); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if limit == 0 {
		limit = DefaultStreamLimit
	}
	if limit < 1 || limit > MaxStreamLimit {
		return nil, fmt.Errorf("%w: limit %d: want 1 to %d", ErrInvalid, limit, MaxStreamLimit)
	}
	from = max(from, 1)
	st, err := s.eventStore(ctx)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("admin: stream %q: %w", stream, err)
	}
	if info.Metadata.Tombstoned {
		return nil, fmt.Errorf("admin: stream %q is tombstoned: %w", stream, ErrNotFound)
	}
	if info.Version == 0 {
		return nil, fmt.Errorf("admin: stream %q has no events: %w", stream, ErrNotFound)
	}
	page := &StreamPage{Stream: stream, Version: info.Version, Metadata: info.Metadata, Events: []StreamEvent{}}
	for r, err := range st.Load(ctx, stream, from-1) {
		if err != nil {
			return nil, fmt.Errorf("admin: stream %q: %w", stream, err)
		}
		if len(page.Events) == limit {
			page.Next = r.Version
			break
		}
		page.Events = append(page.Events, streamEvent(r))
	}
	return page, nil
}

func (h *handler) streamRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/streams/{stream}", h.streamEvents)
}

func (h *handler) streamEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := queryInt(q, "limit", DefaultStreamLimit, 1, MaxStreamLimit)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var from uint64
	if v := q.Get("from"); v != "" {
		if from, err = strconv.ParseUint(v, 10, 64); err != nil {
			h.fail(w, r, fmt.Errorf("%w: from %q: want a version number", ErrInvalid, v))
			return
		}
	}
	page, err := h.s.StreamEvents(r.Context(), r.PathValue("stream"), from, limit)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

// StreamEvents returns a page of an event-sourced stream's events from
// version from (0: the first); limit 0 takes the server's default.
func (c *Client) StreamEvents(ctx context.Context, stream string, from uint64, limit int) (*StreamPage, error) {
	q := url.Values{}
	if from > 0 {
		q.Set("from", strconv.FormatUint(from, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out StreamPage
	if err := c.do(ctx, http.MethodGet, "/api/v1/streams/"+url.PathEscape(stream), q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
