package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/projection"
)

// ErrUnavailable: the server was not given what the request needs (503),
// for example the projections' database.
var ErrUnavailable = errors.New("not available on this server")

// WithProjections has the service read projections' state from pool's
// database (table herald_projections, kept by package projection). The
// pool stays the caller's to close. Without it the projection
// endpoints answer 503.
func WithProjections(pool *pgxpool.Pool) Option { return func(s *Service) { s.projections = pool } }

// HasProjections reports whether the service was given the projections'
// database.
func (s *Service) HasProjections() bool { return s.projections != nil }

func (s *Service) projectionPool() (*pgxpool.Pool, error) {
	if s.projections == nil {
		return nil, fmt.Errorf("admin: projections: %w (start herald serve with --projections-postgres-url)", ErrUnavailable)
	}
	return s.projections, nil
}

func projectionErr(err error) error {
	switch {
	case errors.Is(err, projection.ErrNotFound):
		return fmt.Errorf("admin: %w: %w", ErrNotFound, err)
	case errors.Is(err, projection.ErrRebuilding):
		return fmt.Errorf("admin: %w: %w", ErrConflict, err)
	}
	return fmt.Errorf("admin: %w", err)
}

// Projections lists the projections with their position, lag and state.
func (s *Service) Projections(ctx context.Context) ([]projection.Status, error) {
	pool, err := s.projectionPool()
	if err != nil {
		return nil, err
	}
	out, err := projection.List(ctx, pool)
	if err != nil {
		return nil, projectionErr(err)
	}
	return out, nil
}

// Projection returns one projection's state.
func (s *Service) Projection(ctx context.Context, name string) (*projection.Status, error) {
	pool, err := s.projectionPool()
	if err != nil {
		return nil, err
	}
	st, err := projection.Lookup(ctx, pool, name)
	if err != nil {
		return nil, projectionErr(err)
	}
	return &st, nil
}

// RebuildProjection asks the projector running name to rebuild it (see
// projection.RequestRebuild); the rebuild's progress shows in
// Projection. A rebuild already asked for or running is ErrConflict.
func (s *Service) RebuildProjection(ctx context.Context, name string) (*projection.Status, error) {
	pool, err := s.projectionPool()
	if err != nil {
		return nil, err
	}
	st, err := projection.RequestRebuild(ctx, pool, name)
	if err != nil {
		return nil, projectionErr(err)
	}
	s.log.Info("projection rebuild requested", "projection", name)
	return &st, nil
}

func (h *handler) projectionRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/projections", h.projections)
	mux.HandleFunc("GET /api/v1/projections/{name}", h.projection)
	mux.HandleFunc("POST /api/v1/projections/{name}/rebuild", h.rebuildProjection)
}

func (h *handler) projections(w http.ResponseWriter, r *http.Request) {
	out, err := h.s.Projections(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"projections": out})
}

func (h *handler) projection(w http.ResponseWriter, r *http.Request) {
	st, err := h.s.Projection(r.Context(), r.PathValue("name"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (h *handler) rebuildProjection(w http.ResponseWriter, r *http.Request) {
	st, err := h.s.RebuildProjection(r.Context(), r.PathValue("name"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, st)
}

// Projections lists the projections.
func (c *Client) Projections(ctx context.Context) ([]projection.Status, error) {
	var out struct {
		Projections []projection.Status `json:"projections"`
	}
	return out.Projections, c.do(ctx, http.MethodGet, "/api/v1/projections", nil, nil, &out)
}

// Projection returns one projection's state.
func (c *Client) Projection(ctx context.Context, name string) (*projection.Status, error) {
	var out projection.Status
	if err := c.do(ctx, http.MethodGet, "/api/v1/projections/"+url.PathEscape(name), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RebuildProjection asks for a rebuild of projection name.
func (c *Client) RebuildProjection(ctx context.Context, name string) (*projection.Status, error) {
	var out projection.Status
	if err := c.do(ctx, http.MethodPost, "/api/v1/projections/"+url.PathEscape(name)+"/rebuild", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
