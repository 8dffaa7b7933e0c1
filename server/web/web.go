// Package web is Herald's dashboard: HTML pages served on the admin
// address at / that show topics, consumer groups, dead letters, events,
// schemas and the topology of the running system, and let an operator
// redrive or purge dead letters and pause, resume or rewind groups.
//
// The pages are rendered on the server with html/template from the same
// admin service, audit log and schema registry the admin API answers
// from, so every page reads without JavaScript; htmx (vendored, served
// from /static/) refreshes the live parts. Actions are HTML form posts,
// which the admin listener's guard checks like any other request (same
// origin, and an admin when authentication is on).
//
//	h, err := web.New(web.Sources{Admin: svc, Audit: indexer, Registry: reg})
//	mux.Handle("/", h)
package web

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/server/admin"
	"github.com/heraldhq/herald/server/audit"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Sources are what the dashboard reads and acts on. Admin is required;
// Audit (nil when the audit log is off) and Registry (nil without one)
// turn their pages off when missing.
type Sources struct {
	Admin    *admin.Service
	Audit    admin.AuditLog
	Registry *schema.Registry
}

// Handler serves the dashboard. It is safe for concurrent use.
type Handler struct {
	src    Sources
	log    *slog.Logger
	tmpl   map[string]*template.Template
	mux    *http.ServeMux
	static http.Handler
	now    func() time.Time
	// sample is how many of each topic's newest messages the topology
	// reads.
	sample int
	// brokerURL is where clients connect, for the AsyncAPI servers.
	brokerURL string
}

// Option configures a Handler.
type Option func(*Handler)

// WithLogger sets the logger. Default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(h *Handler) { h.log = l } }

// WithTopologySample sets how many of each topic's newest messages the
// topology page and the AsyncAPI export read. Default 1000; at most 10000.
func WithTopologySample(n int) Option { return func(h *Handler) { h.sample = n } }

// WithBrokerURL names the broker clients connect to (nats://, kafka://,
// amqp://), written as the server of the AsyncAPI export. Default: none.
func WithBrokerURL(u string) Option { return func(h *Handler) { h.brokerURL = u } }

// New returns the dashboard over src.
func New(src Sources, opts ...Option) (*Handler, error) {
	if src.Admin == nil {
		return nil, errors.New("web: Sources.Admin is required")
	}
	h := &Handler{src: src, log: slog.Default(), now: time.Now, sample: 1000}
	for _, o := range opts {
		o(h)
	}
	if h.sample < 1 || h.sample > 10_000 {
		return nil, fmt.Errorf("web: topology sample %d: want 1 to 10000", h.sample)
	}
	var err error
	if h.tmpl, err = parseTemplates(); err != nil {
		return nil, err
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, fmt.Errorf("web: static files: %w", err)
	}
	h.static = http.StripPrefix("/static/", http.FileServerFS(sub))
	h.routes()
	return h, nil
}

// ServeHTTP serves a dashboard page.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

func (h *Handler) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /static/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		h.static.ServeHTTP(w, r)
	})
	m.HandleFunc("GET /{$}", h.overview)
	m.HandleFunc("GET /topics/{topic}", h.topic)
	m.HandleFunc("GET /topics/{topic}/events/{seq}", h.event)
	m.HandleFunc("GET /dlq", h.dlqs)
	m.HandleFunc("GET /dlq/{topic}", h.dlq)
	m.HandleFunc("POST /dlq/{topic}/redrive", h.redrive)
	m.HandleFunc("POST /dlq/{topic}/purge", h.purge)
	m.HandleFunc("GET /groups", h.groups)
	m.HandleFunc("GET /groups/{group}", h.group)
	m.HandleFunc("POST /groups/{group}/pause", h.pause)
	m.HandleFunc("POST /groups/{group}/resume", h.resume)
	m.HandleFunc("POST /groups/{group}/rewind", h.rewind)
	m.HandleFunc("GET /schemas", h.schemas)
	m.HandleFunc("GET /schemas/{subject}", h.subject)
	m.HandleFunc("GET /trace/{correlation}", h.trace)
	m.HandleFunc("GET /sagas", h.sagas)
	m.HandleFunc("GET /sagas/{id}", h.saga)
	m.HandleFunc("GET /projections", h.projections)
	m.HandleFunc("GET /projections/{name}", h.projection)
	m.HandleFunc("POST /projections/{name}/rebuild", h.rebuildProjection)
	m.HandleFunc("GET /topology", h.topology)
	m.HandleFunc("GET /topology.svg", h.topologySVG)
	m.HandleFunc("GET /asyncapi.json", h.asyncapi)
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, r, fmt.Errorf("%w: no dashboard page %s %s", admin.ErrNotFound, r.Method, r.URL.Path))
	})
	h.mux = m
}

// page is what every template gets.
type page struct {
	Title string
	// Nav names the menu entry to mark current.
	Nav string
	// Flash is a message about what an action did; Err one about what
	// went wrong.
	Flash, Err string
	// Status is the HTTP status the page is served with.
	Status int
	Data   any
	// Audit and Registry say which optional sources are there;
	// Projections whether the server reads projections' state.
	Audit, Registry, Projections bool
}

func (h *Handler) render(w http.ResponseWriter, r *http.Request, name string, p page) {
	t, ok := h.tmpl[name]
	if !ok {
		h.log.Error("dashboard template missing", "template", name)
		http.Error(w, "dashboard template "+name+" missing", http.StatusInternalServerError)
		return
	}
	p.Audit, p.Registry, p.Projections = h.src.Audit != nil, h.src.Registry != nil, h.src.Admin.HasProjections()
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", p); err != nil {
		h.log.Error("dashboard page failed", "path", r.URL.Path, "error", err)
		http.Error(w, "the page could not be rendered: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'")
	status := p.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// statusOf maps an error to the status the page is served with, like the
// admin API does.
func statusOf(err error) int {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, admin.ErrInvalid), errors.Is(err, audit.ErrInvalidQuery), errors.Is(err, broker.ErrInvalidTopic),
		errors.Is(err, schema.ErrInvalidSchema), errors.Is(err, errBadInput):
		return http.StatusBadRequest
	case errors.Is(err, admin.ErrNotFound), errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, jetstream.ErrConsumerNotFound),
		errors.Is(err, schema.ErrSubjectNotFound), errors.Is(err, schema.ErrVersionNotFound), errors.Is(err, schema.ErrSchemaNotFound):
		return http.StatusNotFound
	case errors.Is(err, admin.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, admin.ErrUnavailable):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.As(err, &apiErr) && apiErr.Code >= 400 && apiErr.Code < 500:
		return apiErr.Code
	}
	return http.StatusInternalServerError
}

// errBadInput marks a malformed request the dashboard itself rejects.
var errBadInput = errors.New("bad request")

func badInput(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadInput, fmt.Sprintf(format, args...))
}

// fail serves an error page saying what went wrong.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := statusOf(err)
	if code >= 500 {
		h.log.Warn("dashboard request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	}
	h.render(w, r, "error", page{Title: http.StatusText(code), Err: err.Error(), Status: code})
}

// link builds a dashboard path from escaped segments and a query.
func link(q url.Values, segs ...string) string {
	var b strings.Builder
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	if b.Len() == 0 {
		b.WriteByte('/')
	}
	if len(q) > 0 {
		b.WriteByte('?')
		b.WriteString(q.Encode())
	}
	return b.String()
}
