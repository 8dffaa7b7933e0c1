package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/saga"
)

// SagaSummary is one saga instance in a listing.
type SagaSummary struct {
	ID      string     `json:"id"`
	Saga    string     `json:"saga"`
	State   saga.State `json:"state"`
	Step    string     `json:"step"`
	Error   string     `json:"error,omitempty"`
	Created time.Time  `json:"created"`
	Updated time.Time  `json:"updated"`
}

// SagaDetail is one saga instance with its history; each entry's
// duration is from sending its command to its reply or timeout (0 while
// it waits).
type SagaDetail struct {
	SagaSummary
	Deadline time.Time   `json:"deadline,omitzero"`
	History  []SagaEntry `json:"history"`
}

// SagaEntry is one command of a saga's history.
type SagaEntry struct {
	saga.Entry
	DurationSeconds float64 `json:"duration_seconds"`
}

func (s *Service) sagaStore(ctx context.Context, bucket string) (*saga.KVStore, error) {
	st, err := saga.OpenKVStore(ctx, s.js, bucket)
	if errors.Is(err, saga.ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return st, err
}

func summary(in *saga.Instance) SagaSummary {
	step := ""
	if n := len(in.History); n > 0 {
		step = in.History[n-1].Step
	}
	return SagaSummary{ID: in.ID, Saga: in.Saga, State: in.State, Step: step, Error: in.Error, Created: in.Created, Updated: in.Updated}
}

// Sagas lists the instances of the saga bucket (saga.DefaultBucket if
// empty) in state (all if empty), oldest first.
func (s *Service) Sagas(ctx context.Context, bucket string, state saga.State) ([]SagaSummary, error) {
	st, err := s.sagaStore(ctx, bucket)
	if err != nil {
		return nil, err
	}
	ins, err := st.List(ctx, state)
	if err != nil {
		return nil, err
	}
	out := make([]SagaSummary, 0, len(ins))
	for _, in := range ins {
		out = append(out, summary(in))
	}
	return out, nil
}

// Saga returns one instance with its history.
func (s *Service) Saga(ctx context.Context, bucket, id string) (*SagaDetail, error) {
	st, err := s.sagaStore(ctx, bucket)
	if err != nil {
		return nil, err
	}
	in, err := st.Get(ctx, id)
	if errors.Is(err, jetstream.ErrInvalidKey) {
		return nil, fmt.Errorf("%w: saga id %q: an id is letters, digits, '_', '=', '-' and '.'", ErrInvalid, id)
	}
	if errors.Is(err, saga.ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	if err != nil {
		return nil, err
	}
	d := &SagaDetail{SagaSummary: summary(in), Deadline: in.Deadline, History: make([]SagaEntry, 0, len(in.History))}
	for _, e := range in.History {
		se := SagaEntry{Entry: e}
		if !e.Ended.IsZero() {
			se.DurationSeconds = e.Ended.Sub(e.Sent).Seconds()
		}
		d.History = append(d.History, se)
	}
	return d, nil
}

func (h *handler) sagaRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/sagas", h.sagas)
	mux.HandleFunc("GET /api/v1/sagas/{id}", h.sagaDetail)
}

func (h *handler) sagas(w http.ResponseWriter, r *http.Request) {
	var state saga.State
	if v := r.URL.Query().Get("state"); v != "" {
		st, err := saga.ParseState(v)
		if err != nil {
			h.fail(w, r, fmt.Errorf("%w: %w", ErrInvalid, err))
			return
		}
		state = st
	}
	out, err := h.s.Sagas(r.Context(), r.URL.Query().Get("bucket"), state)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"sagas": out})
}

func (h *handler) sagaDetail(w http.ResponseWriter, r *http.Request) {
	d, err := h.s.Saga(r.Context(), r.URL.Query().Get("bucket"), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// Sagas lists saga instances (state "" for all) of bucket ("" for the
// default).
func (c *Client) Sagas(ctx context.Context, bucket string, state saga.State) ([]SagaSummary, error) {
	q := url.Values{}
	if state != "" {
		q.Set("state", string(state))
	}
	if bucket != "" {
		q.Set("bucket", bucket)
	}
	var out struct {
		Sagas []SagaSummary `json:"sagas"`
	}
	return out.Sagas, c.do(ctx, http.MethodGet, "/api/v1/sagas", q, nil, &out)
}

// Saga returns one saga instance with its history.
func (c *Client) Saga(ctx context.Context, bucket, id string) (*SagaDetail, error) {
	q := url.Values{}
	if bucket != "" {
		q.Set("bucket", bucket)
	}
	var out SagaDetail
	if err := c.do(ctx, http.MethodGet, "/api/v1/sagas/"+url.PathEscape(id), q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
