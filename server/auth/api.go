package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
)

// Handler serves credentials management under /api/v1/auth/ (admins only,
// by AdminPolicy):
//
//	GET    /api/v1/auth/identities              the identities (no secrets)
//	POST   /api/v1/auth/services                ServiceSpec -> CredentialsResponse
//	POST   /api/v1/auth/users                   UserSpec -> CredentialsResponse
//	POST   /api/v1/auth/identities/{name}/rotate  -> CredentialsResponse
//	DELETE /api/v1/auth/identities/{name}       revoke
//
// m nil (the server runs without authentication) answers 409 saying so.
func Handler(m *Manager) http.Handler {
	h := &apiHandler{m: m}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/auth/identities", h.list)
	mux.HandleFunc("POST /api/v1/auth/services", h.addService)
	mux.HandleFunc("POST /api/v1/auth/users", h.addUser)
	mux.HandleFunc("POST /api/v1/auth/identities/{name}/rotate", h.rotate)
	mux.HandleFunc("DELETE /api/v1/auth/identities/{name}", h.revoke)
	mux.HandleFunc("/api/v1/auth/", func(w http.ResponseWriter, r *http.Request) {
		apiError(w, http.StatusNotFound, fmt.Sprintf("no admin API endpoint %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// CredentialsResponse carries a new credentials file. It is shown once:
// Herald keeps only a hash of its token.
type CredentialsResponse struct {
	Identity    Entry  `json:"identity"`
	Credentials string `json:"credentials"`
}

type apiHandler struct{ m *Manager }

func apiError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func apiJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

func (h *apiHandler) off(w http.ResponseWriter) bool {
	if h.m == nil {
		apiError(w, http.StatusConflict, "authentication is off on this server: start it with --auth to manage credentials")
		return true
	}
	return false
}

func (h *apiHandler) fail(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ErrExists):
		code = http.StatusConflict
	}
	apiError(w, code, err.Error())
}

func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		apiError(w, http.StatusUnsupportedMediaType, "send the body as application/json")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			apiError(w, http.StatusRequestEntityTooLarge, "body larger than 64 KiB")
			return false
		}
		apiError(w, http.StatusBadRequest, "body: "+err.Error())
		return false
	}
	return true
}

func actor(r *http.Request) string {
	if id, ok := FromContext(r.Context()); ok {
		return id.Name
	}
	return "anonymous"
}

func (h *apiHandler) list(w http.ResponseWriter, r *http.Request) {
	if h.off(w) {
		return
	}
	es := h.m.List()
	for i := range es {
		es[i].TokenHash = ""
	}
	apiJSON(w, map[string]any{"identities": es})
}

func (h *apiHandler) addService(w http.ResponseWriter, r *http.Request) {
	if h.off(w) {
		return
	}
	var spec ServiceSpec
	if !decodeJSON(w, r, &spec) {
		return
	}
	creds, e, err := h.m.AddService(r.Context(), spec, actor(r))
	if err != nil {
		h.fail(w, err)
		return
	}
	e.TokenHash = ""
	apiJSON(w, CredentialsResponse{Identity: *e, Credentials: string(creds)})
}

func (h *apiHandler) addUser(w http.ResponseWriter, r *http.Request) {
	if h.off(w) {
		return
	}
	var spec UserSpec
	if !decodeJSON(w, r, &spec) {
		return
	}
	creds, e, err := h.m.AddUser(r.Context(), spec, actor(r))
	if err != nil {
		h.fail(w, err)
		return
	}
	e.TokenHash = ""
	apiJSON(w, CredentialsResponse{Identity: *e, Credentials: string(creds)})
}

func (h *apiHandler) rotate(w http.ResponseWriter, r *http.Request) {
	if h.off(w) {
		return
	}
	creds, e, err := h.m.Rotate(r.Context(), strings.TrimSpace(r.PathValue("name")), actor(r))
	if err != nil {
		h.fail(w, err)
		return
	}
	e.TokenHash = ""
	apiJSON(w, CredentialsResponse{Identity: *e, Credentials: string(creds)})
}

func (h *apiHandler) revoke(w http.ResponseWriter, r *http.Request) {
	if h.off(w) {
		return
	}
	name := r.PathValue("name")
	if err := h.m.Revoke(r.Context(), name); err != nil {
		h.fail(w, err)
		return
	}
	apiJSON(w, map[string]string{"revoked": name})
}
