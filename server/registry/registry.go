// Package registry serves a schema.Registry over HTTP with the Confluent
// Schema Registry REST API, so Kafka/Confluent clients and serializers
// work against Herald unchanged.
//
// Requests and responses use application/vnd.schemaregistry.v1+json (plain
// application/json is accepted too); unknown request fields are ignored;
// errors are {"error_code":N,"message":"..."} with Confluent's codes, and
// the HTTP status is the code's first three digits (409 for an
// incompatible schema).
//
//	reg, _ := schema.New(ctx, store)
//	http.ListenAndServe("127.0.0.1:8081", registry.NewHandler(reg))
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/heraldhq/herald/schema"
)

// ContentType is the media type of every response.
const ContentType = "application/vnd.schemaregistry.v1+json"

// Handler serves the REST API. It is safe for concurrent use.
type Handler struct {
	reg     *schema.Registry
	log     *slog.Logger
	maxBody int64
	mux     *http.ServeMux

	// byID caches the encoded GET /schemas/ids/{id} body. A schema's text
	// never changes for its id, so an entry stays valid for as long as the
	// registry still serves the id.
	byID sync.Map // int -> []byte
}

// Option configures a Handler.
type Option func(*Handler)

// WithLogger sets the logger for server-side failures. Default
// slog.Default().
func WithLogger(l *slog.Logger) Option { return func(h *Handler) { h.log = l } }

// WithMaxBodySize limits request bodies. Default 8 MiB.
func WithMaxBodySize(n int64) Option { return func(h *Handler) { h.maxBody = n } }

// NewHandler returns the HTTP handler for reg.
func NewHandler(reg *schema.Registry, opts ...Option) *Handler {
	h := &Handler{reg: reg, log: slog.Default(), maxBody: 8 << 20, mux: http.NewServeMux()}
	for _, o := range opts {
		o(h)
	}
	m := h.mux
	m.HandleFunc("/", h.noRoute)
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) { h.write(w, http.StatusOK, struct{}{}) })
	m.HandleFunc("GET /subjects", h.subjects)
	m.HandleFunc("GET /subjects/{subject}/versions", h.versions)
	m.HandleFunc("POST /subjects/{subject}/versions", h.register)
	m.HandleFunc("POST /subjects/{subject}", h.lookup)
	m.HandleFunc("DELETE /subjects/{subject}", h.deleteSubject)
	m.HandleFunc("GET /subjects/{subject}/versions/{version}", h.version)
	m.HandleFunc("GET /subjects/{subject}/versions/{version}/schema", h.versionSchema)
	m.HandleFunc("GET /subjects/{subject}/versions/{version}/referencedby", h.referencedBy)
	m.HandleFunc("DELETE /subjects/{subject}/versions/{version}", h.deleteVersion)
	m.HandleFunc("GET /schemas", h.schemas)
	m.HandleFunc("GET /schemas/ids/{id}", h.schemaByID)
	m.HandleFunc("GET /schemas/ids/{id}/schema", h.schemaTextByID)
	m.HandleFunc("GET /schemas/ids/{id}/subjects", h.subjectsByID)
	m.HandleFunc("GET /schemas/ids/{id}/versions", h.versionsByID)
	m.HandleFunc("GET /schemas/types", func(w http.ResponseWriter, _ *http.Request) { h.write(w, http.StatusOK, schema.Types) })
	m.HandleFunc("POST /compatibility/subjects/{subject}/versions", h.compatibility)
	m.HandleFunc("POST /compatibility/subjects/{subject}/versions/{version}", h.compatibility)
	m.HandleFunc("GET /config", h.getConfig)
	m.HandleFunc("GET /config/{subject}", h.getConfig)
	m.HandleFunc("PUT /config", h.putConfig)
	m.HandleFunc("PUT /config/{subject}", h.putConfig)
	m.HandleFunc("DELETE /config", h.deleteConfig)
	m.HandleFunc("DELETE /config/{subject}", h.deleteConfig)
	m.HandleFunc("GET /mode", h.getMode)
	m.HandleFunc("GET /mode/{subject}", h.getMode)
	m.HandleFunc("PUT /mode", h.putMode)
	m.HandleFunc("PUT /mode/{subject}", h.putMode)
	m.HandleFunc("DELETE /mode", h.deleteMode)
	m.HandleFunc("DELETE /mode/{subject}", h.deleteMode)
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			h.log.Error("registry: handler panic", "method", r.Method, "path", r.URL.Path, "panic", p)
			h.fail(w, &schema.Error{Code: schema.ErrStore.Code, Message: "internal error"})
		}
	}()
	h.mux.ServeHTTP(w, r)
}

// noRoute answers requests no route matches: 405 with Allow when the
// path exists for other methods, 404 otherwise, in the API's error format.
func (h *Handler) noRoute(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
		if m == r.Method {
			continue
		}
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := h.mux.Handler(probe); pattern != "/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		h.writeError(w, http.StatusMethodNotAllowed, http.StatusMethodNotAllowed,
			fmt.Sprintf("HTTP 405 Method Not Allowed: %s %s", r.Method, r.URL.Path))
		return
	}
	h.writeError(w, http.StatusNotFound, http.StatusNotFound, fmt.Sprintf("HTTP 404 Not Found: %s %s", r.Method, r.URL.Path))
}

// ---- responses

type errorBody struct {
	Code    int    `json:"error_code"`
	Message string `json:"message"`
}

func (h *Handler) write(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		h.log.Error("registry: encode response", "err", err)
		h.writeError(w, http.StatusInternalServerError, schema.ErrStore.Code, "cannot encode response")
		return
	}
	h.writeRaw(w, status, b)
}

func (h *Handler) writeRaw(w http.ResponseWriter, status int, b []byte) {
	hd := w.Header()
	hd["Content-Type"] = []string{ContentType}
	hd["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func (h *Handler) writeError(w http.ResponseWriter, status, code int, msg string) {
	b, _ := json.Marshal(errorBody{Code: code, Message: msg})
	h.writeRaw(w, status, b)
}

// fail writes err: a *schema.Error with its code, anything else as 50001.
func (h *Handler) fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads this.
		h.writeError(w, 499, 499, "request cancelled")
		return
	case errors.Is(err, context.DeadlineExceeded):
		h.writeError(w, http.StatusGatewayTimeout, 50002, "operation timed out: "+err.Error())
		return
	}
	var se *schema.Error
	if !errors.As(err, &se) {
		se = &schema.Error{Code: schema.ErrStore.Code, Message: err.Error()}
	}
	status := se.Status()
	if status >= 500 {
		h.log.Error("registry: request failed", "code", se.Code, "err", err)
	}
	h.writeError(w, status, se.Code, se.Message)
}

// WriteError writes an error answer in the API's format, with the HTTP
// status as its error code (for refusals before a request reaches the
// handler: authentication, roles, hosts).
func WriteError(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(errorBody{Code: status, Message: msg})
	hd := w.Header()
	hd["Content-Type"] = []string{ContentType}
	hd["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func badRequest(w http.ResponseWriter, h *Handler, format string, args ...any) {
	h.writeError(w, http.StatusBadRequest, http.StatusBadRequest, fmt.Sprintf(format, args...))
}

// ---- request parsing

// decode reads a JSON body into v. It reports (and answers) bad input.
func (h *Handler) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || !acceptedType(mt) {
			h.writeError(w, http.StatusUnsupportedMediaType, http.StatusUnsupportedMediaType,
				fmt.Sprintf("unsupported content type %q: use %s or application/json", ct, ContentType))
			return false
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			h.writeError(w, http.StatusRequestEntityTooLarge, http.StatusRequestEntityTooLarge,
				fmt.Sprintf("request body larger than %d bytes", h.maxBody))
			return false
		}
		badRequest(w, h, "cannot read request body: %v", err)
		return false
	}
	if err := json.Unmarshal(body, v); err != nil {
		h.writeError(w, http.StatusUnprocessableEntity, http.StatusUnprocessableEntity, fmt.Sprintf("malformed JSON request body: %v", err))
		return false
	}
	return true
}

func acceptedType(mt string) bool {
	switch mt {
	case ContentType, "application/vnd.schemaregistry+json", "application/json", "application/octet-stream":
		return true
	}
	return false
}

func boolParam(r *http.Request, name string) bool {
	v := r.URL.Query().Get(name)
	b, err := strconv.ParseBool(v)
	return err == nil && b
}

// versionParam parses {version}: "latest", -1 or a positive number.
func versionParam(r *http.Request) (int, error) {
	v := r.PathValue("version")
	if v == "latest" || v == "-1" {
		return schema.Latest, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 || n > math.MaxInt32 {
		return 0, &schema.Error{Code: schema.ErrInvalidVersion.Code,
			Message: fmt.Sprintf("invalid version %q: want a positive number, -1 or \"latest\"", v)}
	}
	return n, nil
}

func idParam(r *http.Request) (int, error) {
	v := r.PathValue("id")
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 || n > math.MaxInt32 {
		return 0, &schema.Error{Code: schema.ErrSchemaNotFound.Code, Message: fmt.Sprintf("schema id %q not found: ids are positive numbers", v)}
	}
	return n, nil
}

// ---- bodies

type schemaRequest struct {
	Schema     string             `json:"schema"`
	SchemaType string             `json:"schemaType"`
	References []schema.Reference `json:"references"`
	ID         int                `json:"id"`
	Version    int                `json:"version"`
}

func (s schemaRequest) toSchema() (schema.Schema, error) {
	t, err := schema.ParseType(s.SchemaType)
	if err != nil {
		return schema.Schema{}, &schema.Error{Code: schema.ErrInvalidSchema.Code, Message: err.Error()}
	}
	return schema.Schema{Type: t, Text: s.Schema, References: s.References}, nil
}

// apiType is the schemaType field: omitted for Avro.
func apiType(t schema.Type) string {
	if t == schema.Avro {
		return ""
	}
	return string(t)
}

type subjectVersionBody struct {
	Subject    string             `json:"subject"`
	Version    int                `json:"version"`
	ID         int                `json:"id"`
	SchemaType string             `json:"schemaType,omitempty"`
	Schema     string             `json:"schema"`
	References []schema.Reference `json:"references,omitempty"`
}

func versionBody(sv schema.SubjectVersion) subjectVersionBody {
	return subjectVersionBody{Subject: sv.Subject, Version: sv.Version, ID: sv.ID,
		SchemaType: apiType(sv.Schema.Type), Schema: sv.Schema.Text, References: sv.Schema.References}
}

type schemaBody struct {
	SchemaType string             `json:"schemaType,omitempty"`
	Schema     string             `json:"schema"`
	References []schema.Reference `json:"references,omitempty"`
	MaxID      int                `json:"maxId,omitempty"`
}

// ---- handlers

func (h *Handler) subjects(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	deletedOnly := boolParam(r, "deletedOnly")
	subs := h.reg.Subjects(deletedOnly || boolParam(r, "deleted"), q.Get("subjectPrefix"))
	if deletedOnly {
		subs = without(subs, h.reg.Subjects(false, q.Get("subjectPrefix")))
	}
	h.write(w, http.StatusOK, subs)
}

// without returns the elements of all that are not in live (what a
// deletedOnly listing shows), never nil so it encodes as [].
func without[T comparable](all, live []T) []T {
	out := make([]T, 0, len(all))
	for _, x := range all {
		if !slices.Contains(live, x) {
			out = append(out, x)
		}
	}
	return out
}

func (h *Handler) versions(w http.ResponseWriter, r *http.Request) {
	subject := r.PathValue("subject")
	deletedOnly := boolParam(r, "deletedOnly")
	vs, err := h.reg.Versions(subject, deletedOnly || boolParam(r, "deleted"))
	if err != nil {
		h.fail(w, err)
		return
	}
	if deletedOnly {
		live, _ := h.reg.Versions(subject, false)
		vs = without(vs, live)
	}
	h.write(w, http.StatusOK, vs)
}

func (h *Handler) register(w http.ResponseWriter, r *http.Request) {
	var req schemaRequest
	if !h.decode(w, r, &req) {
		return
	}
	s, err := req.toSchema()
	if err != nil {
		h.fail(w, err)
		return
	}
	if req.ID < 0 {
		req.ID = 0
	}
	if req.Version < 0 {
		req.Version = 0
	}
	sv, err := h.reg.Register(r.Context(), r.PathValue("subject"), s, schema.RegisterOptions{
		ID: req.ID, Version: req.Version, Normalize: boolParam(r, "normalize")})
	if err != nil {
		h.fail(w, err)
		return
	}
	h.write(w, http.StatusOK, struct {
		ID int `json:"id"`
	}{sv.ID})
}

func (h *Handler) lookup(w http.ResponseWriter, r *http.Request) {
	var req schemaRequest
	if !h.decode(w, r, &req) {
		return
	}
	s, err := req.toSchema()
	if err != nil {
		h.fail(w, err)
		return
	}
	sv, err := h.reg.LookupContext(r.Context(), r.PathValue("subject"), s, boolParam(r, "normalize"), boolParam(r, "deleted"))
	if err != nil {
		h.fail(w, err)
		return
	}
	h.write(w, http.StatusOK, versionBody(sv))
}

func (h *Handler) getVersion(w http.ResponseWriter, r *http.Request) (schema.SubjectVersion, bool) {
	v, err := versionParam(r)
	if err != nil {
		h.fail(w, err)
		return schema.SubjectVersion{}, false
	}
	sv, err := h.reg.Version(r.PathValue("subject"), v, boolParam(r, "deleted"))
	if err != nil {
		h.fail(w, err)
		return schema.SubjectVersion{}, false
	}
	return sv, true
}

func (h *Handler) version(w http.ResponseWriter, r *http.Request) {
	if sv, ok := h.getVersion(w, r); ok {
		h.write(w, http.StatusOK, versionBody(sv))
	}
}

func (h *Handler) versionSchema(w http.ResponseWriter, r *http.Request) {
	if sv, ok := h.getVersion(w, r); ok {
		h.writeRaw(w, http.StatusOK, []byte(sv.Schema.Text))
	}
}

func (h *Handler) referencedBy(w http.ResponseWriter, r *http.Request) {
	v, err := versionParam(r)
	if err != nil {
		h.fail(w, err)
		return
	}
	ids, err := h.reg.ReferencedBy(r.PathValue("subject"), v)
	if err != nil {
		h.fail(w, err)
		return
	}
	h.write(w, http.StatusOK, ids)
}

func (h *Handler) deleteVersion(w http.ResponseWriter, r *http.Request) {
	v, err := versionParam(r)
	if err != nil {
		h.fail(w, err)
		return
	}
	n, err := h.reg.DeleteVersion(r.Context(), r.PathValue("subject"), v, boolParam(r, "permanent"))
	if err != nil {
		h.fail(w, err)
		return
	}
	h.write(w, http.StatusOK, n)
}

func (h *Handler) deleteSubject(w http.ResponseWriter, r *http.Request) {
	vs, err := h.reg.DeleteSubject(r.Context(), r.PathValue("subject"), boolParam(r, "permanent"))
	if err != nil {
		h.fail(w, err)
		return
	}
	h.write(w, http.StatusOK, vs)
}

func (h *Handler) schemas(w http.ResponseWriter, r *http.Request) {
	deleted := boolParam(r, "deleted")
	latestOnly := boolParam(r, "latestOnly")
	out := []subjectVersionBody{}
	for _, subject := range h.reg.Subjects(deleted, r.URL.Query().Get("subjectPrefix")) {
		vs, err := h.reg.Versions(subject, deleted)
		if err != nil {
			continue // deleted meanwhile
		}
		if latestOnly && len(vs) > 0 {
			vs = vs[len(vs)-1:]
		}
		for _, v := range vs {
			if sv, err := h.reg.Version(subject, v, deleted); err == nil {
				out = append(out, versionBody(sv))
			}
		}
	}
	h.write(w, http.StatusOK, out)
}

func (h *Handler) schemaByID(w http.ResponseWriter, r *http.Request) {
	id, err := idParam(r)
	if err != nil {
		h.fail(w, err)
		return
	}
	s, err := h.reg.SchemaByID(id)
	if err != nil {
		h.byID.Delete(id)
		h.fail(w, err)
		return
	}
	if r.URL.RawQuery == "" {
		if b, ok := h.byID.Load(id); ok {
			h.writeRaw(w, http.StatusOK, b.([]byte))
			return
		}
	}
	body := schemaBody{SchemaType: apiType(s.Type), Schema: s.Text, References: s.References}
	if boolParam(r, "fetchMaxId") {
		body.MaxID = h.reg.MaxID()
	}
	b, err := json.Marshal(body)
	if err != nil {
		h.fail(w, err)
		return
	}
	if r.URL.RawQuery == "" {
		h.byID.Store(id, b)
	}
	h.writeRaw(w, http.StatusOK, b)
}

func (h *Handler) schemaTextByID(w http.ResponseWriter, r *http.Request) {
	id, err := idParam(r)
	if err != nil {
		h.fail(w, err)
		return
	}
	s, err := h.reg.SchemaByID(id)
	if err != nil {
		h.fail(w, err)
		return
	}
	h.writeRaw(w, http.StatusOK, []byte(s.Text))
}

func (h *Handler) subjectsByID(w http.ResponseWriter, r *http.Request) {
	id, err := idParam(r)
	if err != nil {
		h.fail(w, err)
		return
	}
	subs, err := h.reg.SubjectsByID(id, boolParam(r, "deleted"))
	if err != nil {
		h.fail(w, err)
		return
	}
	h.write(w, http.StatusOK, subs)
}

func (h *Handler) versionsByID(w http.ResponseWriter, r *http.Request) {
	id, err := idParam(r)
	if err != nil {
		h.fail(w, err)
		return
	}
	vs, err := h.reg.VersionsByID(id, boolParam(r, "deleted"))
	if err != nil {
		h.fail(w, err)
		return
	}
	h.write(w, http.StatusOK, vs)
}

func (h *Handler) compatibility(w http.ResponseWriter, r *http.Request) {
	version := schema.CheckAll
	if r.PathValue("version") != "" {
		v, err := versionParam(r)
		if err != nil {
			h.fail(w, err)
			return
		}
		version = v
	}
	var req schemaRequest
	if !h.decode(w, r, &req) {
		return
	}
	s, err := req.toSchema()
	if err != nil {
		h.fail(w, err)
		return
	}
	res, err := h.reg.Check(r.Context(), r.PathValue("subject"), version, s, boolParam(r, "normalize"))
	if err != nil {
		h.fail(w, err)
		return
	}
	msgs := res.Messages
	if !boolParam(r, "verbose") && len(msgs) > 1 {
		msgs = msgs[:1]
	}
	if msgs == nil {
		msgs = []string{}
	}
	h.write(w, http.StatusOK, struct {
		IsCompatible bool     `json:"is_compatible"`
		Messages     []string `json:"messages"`
	}{res.Compatible, msgs})
}

type configBody struct {
	Level string `json:"compatibilityLevel"`
}

func (h *Handler) getConfig(w http.ResponseWriter, r *http.Request) {
	l, err := h.reg.Config(r.PathValue("subject"), boolParam(r, "defaultToGlobal"))
	if err != nil {
		h.fail(w, err)
		return
	}
	h.write(w, http.StatusOK, configBody{Level: string(l)})
}

func (h *Handler) putConfig(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Compatibility string `json:"compatibility"`
	}
	if !h.decode(w, r, &req) {
		return
	}
	l, err := schema.ParseLevel(req.Compatibility)
	if err != nil {
		h.fail(w, err)
		return
	}
	if err := h.reg.SetConfig(r.Context(), r.PathValue("subject"), l); err != nil {
		h.fail(w, err)
		return
	}
	h.write(w, http.StatusOK, struct {
		Compatibility string `json:"compatibility"`
	}{string(l)})
}

func (h *Handler) deleteConfig(w http.ResponseWriter, r *http.Request) {
	prev, err := h.reg.DeleteConfig(r.Context(), r.PathValue("subject"))
	if err != nil {
		h.fail(w, err)
		return
	}
	// Both spellings: clients read either.
	h.write(w, http.StatusOK, struct {
		Compatibility string `json:"compatibility"`
		Level         string `json:"compatibilityLevel"`
	}{string(prev), string(prev)})
}

type modeBody struct {
	Mode string `json:"mode"`
}

func (h *Handler) getMode(w http.ResponseWriter, r *http.Request) {
	m, err := h.reg.Mode(r.PathValue("subject"), boolParam(r, "defaultToGlobal"))
	if err != nil {
		h.fail(w, err)
		return
	}
	h.write(w, http.StatusOK, modeBody{Mode: string(m)})
}

func (h *Handler) putMode(w http.ResponseWriter, r *http.Request) {
	var req modeBody
	if !h.decode(w, r, &req) {
		return
	}
	m, err := schema.ParseMode(req.Mode)
	if err != nil {
		h.fail(w, err)
		return
	}
	if err := h.reg.SetMode(r.Context(), r.PathValue("subject"), m, boolParam(r, "force")); err != nil {
		h.fail(w, err)
		return
	}
	h.write(w, http.StatusOK, modeBody{Mode: string(m)})
}

func (h *Handler) deleteMode(w http.ResponseWriter, r *http.Request) {
	prev, err := h.reg.DeleteMode(r.Context(), r.PathValue("subject"))
	if err != nil {
		h.fail(w, err)
		return
	}
	h.write(w, http.StatusOK, modeBody{Mode: string(prev)})
}
