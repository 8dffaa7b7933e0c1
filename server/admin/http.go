package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/server/audit"
)

// AuditLog answers audit queries; *audit.Indexer implements it.
type AuditLog interface {
	Query(ctx context.Context, q audit.Query) ([]audit.Record, error)
}

// maxBody bounds request bodies.
const maxBody = 1 << 20

// maxTrace is the most events a trace reads; maxWithPayload the most an
// answer carries with payloads (each up to the indexer's payload limit,
// 64 KiB by default).
const (
	maxTrace       = audit.MaxLimit
	maxWithPayload = 1000
)

// Handler serves the admin API under /api/v1/ (see docs/operations.md):
//
//	GET    /api/v1/topics                      topics, sizes, retention
//	PUT    /api/v1/topics/{topic}/retention    RetentionRequest
//	GET    /api/v1/dlq                         dead-letter topics and depths
//	GET    /api/v1/dlq/{topic}?after=&limit=   dead letters of a topic
//	GET    /api/v1/dlq/{topic}/{seq}           one dead letter with headers and payload
//	POST   /api/v1/dlq/redrive                 RedriveRequest
//	DELETE /api/v1/dlq/{topic}?confirm=TOPIC   purge
//	GET    /api/v1/groups?topic=&group=        lag per group
//	GET    /api/v1/breakers                    circuit breakers the groups' routers report
//	POST   /api/v1/replay                      ReplayRequest
//	GET    /api/v1/audit?correlation=|subject=|type=[&topic=&since=&until=&after=&limit=&payload=false]
//	GET    /api/v1/trace/{correlation}[?payload=true]
//	GET    /api/v1/sagas?state=&bucket=        saga instances
//	GET    /api/v1/sagas/{id}?bucket=          one instance with its step history
//	GET    /api/v1/streams/{stream}?from=&limit=  events of an event-sourced stream
//	GET    /api/v1/projections                 projections with position, lag and state
//	GET    /api/v1/projections/{name}          one projection
//	POST   /api/v1/projections/{name}/rebuild  ask its projector to rebuild it
//
// Answers are JSON; errors are {"error": "..."} with a 4xx status for bad
// input, unknown names and conflicts. auditLog may be nil when the audit
// log is off (its endpoints answer 503).
func Handler(s *Service, auditLog AuditLog) http.Handler {
	h := &handler{s: s, audit: auditLog, log: s.log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/topics", h.topics)
	mux.HandleFunc("PUT /api/v1/topics/{topic}/retention", h.retention)
	mux.HandleFunc("GET /api/v1/dlq", h.dlqs)
	mux.HandleFunc("GET /api/v1/dlq/{topic}", h.dlqEntries)
	mux.HandleFunc("GET /api/v1/dlq/{topic}/{seq}", h.dlqEntry)
	mux.HandleFunc("POST /api/v1/dlq/redrive", h.redrive)
	mux.HandleFunc("DELETE /api/v1/dlq/{topic}", h.purge)
	mux.HandleFunc("GET /api/v1/groups", h.groups)
	mux.HandleFunc("GET /api/v1/breakers", h.breakers)
	mux.HandleFunc("POST /api/v1/replay", h.replay)
	mux.HandleFunc("GET /api/v1/audit", h.auditQuery)
	mux.HandleFunc("GET /api/v1/trace/{correlation}", h.trace)
	h.sagaRoutes(mux)
	h.streamRoutes(mux)
	h.projectionRoutes(mux)
	mux.HandleFunc("/api/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no admin API endpoint %s %s", r.Method, r.URL.Path))
	})
	return mux
}

type handler struct {
	s     *Service
	audit AuditLog
	log   *slog.Logger
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// ErrorBody is the body of every error answer.
type ErrorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, ErrorBody{Error: msg})
}

// fail answers err with the status its kind calls for.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrInvalid), errors.Is(err, audit.ErrInvalidQuery), errors.Is(err, broker.ErrInvalidTopic):
		code = http.StatusBadRequest
	case errors.Is(err, ErrNotFound), errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, jetstream.ErrConsumerNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ErrConflict):
		code = http.StatusConflict
	case errors.Is(err, ErrTooLarge):
		code = http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrMediaType):
		code = http.StatusUnsupportedMediaType
	case errors.Is(err, ErrUnavailable):
		code = http.StatusServiceUnavailable
	case errors.Is(err, ErrUnsupported):
		code = http.StatusNotImplemented
	case errors.Is(err, context.DeadlineExceeded):
		code = http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		code = 499 // the client went away; nobody reads this
	}
	if code >= 500 {
		h.log.Warn("admin API request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	}
	writeError(w, code, err.Error())
}

// ErrTooLarge: the request body is larger than the API takes (413).
var ErrTooLarge = errors.New("request body too large")

// ErrMediaType: the request body is not JSON (415). Requiring
// application/json also keeps web pages from posting to the API: a
// browser sends that type across sites only after a CORS preflight, which
// the API never grants.
var ErrMediaType = errors.New("unsupported media type")

// IsJSONType reports whether a Content-Type header names JSON
// (application/json, or a +json type).
func IsJSONType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

// decode reads a JSON body into v: Content-Type application/json, at most
// 1 MiB, known fields only, one value.
func decode(r *http.Request, w http.ResponseWriter, v any) error {
	if ct := r.Header.Get("Content-Type"); !IsJSONType(ct) {
		return fmt.Errorf("%w: Content-Type %q: send the body as application/json", ErrMediaType, ct)
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("%w: body is larger than %d bytes", ErrTooLarge, maxBody)
		}
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: body is empty; want a JSON object", ErrInvalid)
		}
		return fmt.Errorf("%w: body: %w", ErrInvalid, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: body holds more than one JSON value", ErrInvalid)
	}
	return nil
}

func (h *handler) topics(w http.ResponseWriter, r *http.Request) {
	ts, err := h.s.Topics(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"topics": ts})
}

func (h *handler) retention(w http.ResponseWriter, r *http.Request) {
	var req RetentionRequest
	if err := decode(r, w, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	ret, err := req.Parse()
	if err != nil {
		h.fail(w, r, err)
		return
	}
	info, err := h.s.SetRetention(r.Context(), r.PathValue("topic"), ret)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (h *handler) dlqs(w http.ResponseWriter, r *http.Request) {
	ds, err := h.s.DLQs(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"dlqs": ds})
}

// EntryPage is a page of dead letters; Next is the after of the next page
// ("" when this is the last).
type EntryPage struct {
	Entries []Entry `json:"entries"`
	Next    string  `json:"next,omitempty"`
}

func queryInt(v url.Values, name string, def, lo, hi int) (int, error) {
	s := v.Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%w: %s %q: want an integer from %d to %d", ErrInvalid, name, s, lo, hi)
	}
	return n, nil
}

func (h *handler) dlqEntries(w http.ResponseWriter, r *http.Request) {
	topic := r.PathValue("topic")
	if err := broker.ValidateName("topic", topic); err != nil {
		h.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	limit, err := queryInt(q, "limit", 100, 1, 10_000)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var after uint64
	if s := q.Get("after"); s != "" {
		if after, err = strconv.ParseUint(s, 10, 64); err != nil {
			h.fail(w, r, fmt.Errorf("%w: after %q: want a sequence number", ErrInvalid, s))
			return
		}
	}
	es, next, err := h.s.DLQEntries(r.Context(), topic, after, limit)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	page := EntryPage{Entries: es}
	if next > 0 {
		page.Next = strconv.FormatUint(next, 10)
	}
	writeJSON(w, http.StatusOK, page)
}

func (h *handler) dlqEntry(w http.ResponseWriter, r *http.Request) {
	e, err := h.s.DLQEntry(r.Context(), r.PathValue("topic")+":"+r.PathValue("seq"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, e)
}

func (h *handler) redrive(w http.ResponseWriter, r *http.Request) {
	var req RedriveRequest
	if err := decode(r, w, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.s.Redrive(r.Context(), req)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// PurgeResult says how many dead letters a purge removed.
type PurgeResult struct {
	DLQTopic string `json:"dlq_topic"`
	Purged   uint64 `json:"purged"`
}

func (h *handler) purge(w http.ResponseWriter, r *http.Request) {
	topic := r.PathValue("topic")
	if err := broker.ValidateName("topic", topic); err != nil {
		h.fail(w, r, err)
		return
	}
	n, err := h.s.PurgeDLQ(r.Context(), topic, r.URL.Query().Get("confirm"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, PurgeResult{DLQTopic: DeadLetterTopicOf(topic), Purged: n})
}

func (h *handler) groups(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	lags, err := h.s.Lag(r.Context(), q.Get("topic"), q.Get("group"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"groups": lags})
}

func (h *handler) breakers(w http.ResponseWriter, r *http.Request) {
	bs, err := h.s.Breakers(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"groups": bs})
}

// ReplayRequest is the body of POST /api/v1/replay: either Group and To
// (rewind a group, on Topic only when set), or Topic, From and IntoGroup
// (replay a topic into a new group). Positions are "first", "new",
// "seq:N" or "time:RFC3339".
type ReplayRequest struct {
	Group     string `json:"group,omitempty"`
	To        string `json:"to,omitempty"`
	Topic     string `json:"topic,omitempty"`
	From      string `json:"from,omitempty"`
	IntoGroup string `json:"into_group,omitempty"`
	// KeyOrder applies to IntoGroup: create it key-ordered (the router's
	// default, and the default here) or as a plain work queue.
	KeyOrder *bool `json:"key_order,omitempty"`
}

// replayPlan is a checked ReplayRequest: into is set for a replay into a
// new group, else group, topic and to describe a rewind.
type replayPlan struct {
	into         *ReplayIntoRequest
	group, topic string
	to           broker.Start
}

// plan checks req without touching the broker.
func (req ReplayRequest) plan() (replayPlan, error) {
	switch {
	case req.IntoGroup != "":
		if req.Group != "" || req.To != "" {
			return replayPlan{}, fmt.Errorf("%w: replay: into_group goes with topic and from, not with group and to", ErrInvalid)
		}
		if req.Topic == "" || req.From == "" {
			return replayPlan{}, fmt.Errorf("%w: replay into group %q: topic and from are required", ErrInvalid, req.IntoGroup)
		}
		if err := broker.ValidateName("group", req.IntoGroup); err != nil {
			return replayPlan{}, fmt.Errorf("%w: into_group: %w", ErrInvalid, err)
		}
		if err := broker.ValidateName("topic", req.Topic); err != nil {
			return replayPlan{}, fmt.Errorf("%w: topic: %w", ErrInvalid, err)
		}
		from, err := broker.ParseStart(req.From)
		if err != nil {
			return replayPlan{}, fmt.Errorf("%w: from: %w", ErrInvalid, err)
		}
		keyOrder := req.KeyOrder == nil || *req.KeyOrder
		return replayPlan{into: &ReplayIntoRequest{Topic: req.Topic, From: from, Group: req.IntoGroup, KeyOrder: keyOrder}}, nil
	case req.Group != "":
		if req.From != "" || req.KeyOrder != nil {
			return replayPlan{}, fmt.Errorf("%w: replay of group %q: use to (not from, key_order)", ErrInvalid, req.Group)
		}
		if req.To == "" {
			return replayPlan{}, fmt.Errorf("%w: replay of group %q: to is required (first, new, seq:N or time:RFC3339)", ErrInvalid, req.Group)
		}
		if err := broker.ValidateName("group", req.Group); err != nil {
			return replayPlan{}, fmt.Errorf("%w: group: %w", ErrInvalid, err)
		}
		if req.Topic != "" {
			if err := broker.ValidateName("topic", req.Topic); err != nil {
				return replayPlan{}, fmt.Errorf("%w: topic: %w", ErrInvalid, err)
			}
		}
		to, err := broker.ParseStart(req.To)
		if err != nil {
			return replayPlan{}, fmt.Errorf("%w: to: %w", ErrInvalid, err)
		}
		return replayPlan{group: req.Group, topic: req.Topic, to: to}, nil
	}
	return replayPlan{}, fmt.Errorf("%w: replay: give group and to (rewind a group), or topic, from and into_group (replay into a new group)", ErrInvalid)
}

func (p replayPlan) run(ctx context.Context, s *Service) (*ReplayResult, error) {
	if p.into != nil {
		return s.ReplayInto(ctx, *p.into)
	}
	return s.Rewind(ctx, p.group, p.topic, p.to)
}

func (h *handler) replay(w http.ResponseWriter, r *http.Request) {
	var req ReplayRequest
	if err := decode(r, w, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	plan, err := req.plan()
	if err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := plan.run(r.Context(), h.s)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// AuditQueryValues encodes q as the query string of GET /api/v1/audit.
func AuditQueryValues(q audit.Query) url.Values {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	set("correlation", q.CorrelationID)
	set("subject", q.Subject)
	set("type", q.Type)
	set("topic", q.Topic)
	set("after", q.After)
	if !q.Since.IsZero() {
		v.Set("since", q.Since.Format(time.RFC3339Nano))
	}
	if !q.Until.IsZero() {
		v.Set("until", q.Until.Format(time.RFC3339Nano))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.NoPayload {
		v.Set("payload", "false")
	}
	return v
}

// ParseAuditQuery reads what AuditQueryValues writes and validates it.
func ParseAuditQuery(v url.Values) (audit.Query, error) {
	q := audit.Query{
		CorrelationID: v.Get("correlation"), Subject: v.Get("subject"), Type: v.Get("type"),
		Topic: v.Get("topic"), After: v.Get("after"),
	}
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{"since", &q.Since}, {"until", &q.Until}} {
		if s := v.Get(p.name); s != "" {
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return audit.Query{}, fmt.Errorf("%w: %s %q: want an RFC 3339 time, for example 2026-01-02T15:04:05Z", ErrInvalid, p.name, s)
			}
			*p.t = t
		}
	}
	limit, err := queryInt(v, "limit", audit.DefaultLimit, 1, audit.MaxLimit)
	if err != nil {
		return audit.Query{}, err
	}
	q.Limit = limit
	switch v.Get("payload") {
	case "", "true", "1":
		if limit > maxWithPayload {
			return audit.Query{}, fmt.Errorf("%w: limit %d: at most %d events with payloads (add payload=false for up to %d)", ErrInvalid, limit, maxWithPayload, audit.MaxLimit)
		}
	case "false", "0":
		q.NoPayload = true
	default:
		return audit.Query{}, fmt.Errorf("%w: payload %q: want true or false", ErrInvalid, v.Get("payload"))
	}
	if err := q.Validate(); err != nil {
		return audit.Query{}, err
	}
	return q, nil
}

// AuditPage is a page of audit records; Next is the after of the next page
// ("" when this is the last).
type AuditPage struct {
	Events []audit.Record `json:"events"`
	Next   string         `json:"next,omitempty"`
}

func (h *handler) auditOff(w http.ResponseWriter) bool {
	if h.audit == nil {
		writeError(w, http.StatusServiceUnavailable, "the audit log is off on this server (herald serve --audit off)")
		return true
	}
	return false
}

func (h *handler) auditQuery(w http.ResponseWriter, r *http.Request) {
	if h.auditOff(w) {
		return
	}
	q, err := ParseAuditQuery(r.URL.Query())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	recs, err := h.audit.Query(r.Context(), q)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	page := AuditPage{Events: recs}
	if len(recs) == q.Limit {
		page.Next = recs[len(recs)-1].Cursor
	}
	writeJSON(w, http.StatusOK, page)
}

// Trace is the causation tree of a correlation id.
type Trace struct {
	CorrelationID string        `json:"correlation_id"`
	Events        int           `json:"events"`
	Truncated     bool          `json:"truncated,omitempty"`
	Roots         []*audit.Node `json:"roots"`
}

func (h *handler) trace(w http.ResponseWriter, r *http.Request) {
	if h.auditOff(w) {
		return
	}
	corr := r.PathValue("correlation")
	q := audit.Query{CorrelationID: corr, Limit: maxTrace, NoPayload: true}
	switch p := r.URL.Query().Get("payload"); p {
	case "", "false", "0":
	case "true", "1":
		q.Limit, q.NoPayload = maxWithPayload, false
	default:
		h.fail(w, r, fmt.Errorf("%w: payload %q: want true or false", ErrInvalid, p))
		return
	}
	if err := q.Validate(); err != nil {
		h.fail(w, r, err)
		return
	}
	recs, err := h.audit.Query(r.Context(), q)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if len(recs) == 0 {
		h.fail(w, r, fmt.Errorf("%w: no events with correlation id %q in the audit log", ErrNotFound, corr))
		return
	}
	roots := audit.Tree(recs)
	if roots == nil {
		roots = []*audit.Node{}
	}
	writeJSON(w, http.StatusOK, Trace{CorrelationID: corr, Events: len(recs), Truncated: len(recs) == q.Limit, Roots: roots})
}
