package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"
)

// SubscriptionStatus is a subscription as the API lists it: without its
// secret, with whether this server runs it.
type SubscriptionStatus struct {
	Subscription
	// State is "running", "failed" (Error says why) or "starting".
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// SubscriptionsHandler serves the subscriptions API under
// /api/v1/subscriptions:
//
//	POST   /api/v1/subscriptions          Subscription → 201 with its secret
//	GET    /api/v1/subscriptions          [SubscriptionStatus]
//	GET    /api/v1/subscriptions/{group}  SubscriptionStatus
//	DELETE /api/v1/subscriptions/{group}  204
func (g *Gateway) SubscriptionsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/subscriptions", g.createSub)
	mux.HandleFunc("GET /api/v1/subscriptions", g.listSubs)
	mux.HandleFunc("GET /api/v1/subscriptions/{group}", g.getSub)
	mux.HandleFunc("DELETE /api/v1/subscriptions/{group}", g.deleteSub)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	if g.cfg.store == nil {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			writeProblem(w, http.StatusServiceUnavailable, "subscriptions are not available on this server")
		})
	}
	return mux
}

// decodeJSON reads a JSON body into v, answering 415, 413 or 400 itself.
func (g *Gateway) decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/json" {
		writeProblem(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q: send the body as application/json", r.Header.Get("Content-Type")))
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeProblem(w, http.StatusRequestEntityTooLarge, "body over 1 MiB")
			return false
		}
		writeProblem(w, http.StatusBadRequest, "body: "+err.Error())
		return false
	}
	return true
}

func (g *Gateway) createSub(w http.ResponseWriter, r *http.Request) {
	var s Subscription
	if !g.decodeJSON(w, r, &s) {
		return
	}
	s.Created = time.Time{}
	s, err := s.withDefaults()
	if err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	if g.cfg.topics != nil {
		if err := g.cfg.topics(r.Context(), s.Topic); err != nil {
			if errors.Is(err, ErrUnknownTopic) {
				writeProblem(w, http.StatusNotFound, fmt.Sprintf("topic %q does not exist", s.Topic))
				return
			}
			writeProblem(w, http.StatusServiceUnavailable, err.Error())
			return
		}
	}
	if err := g.cfg.store.Create(r.Context(), s); err != nil {
		if errors.Is(err, ErrExists) {
			writeProblem(w, http.StatusConflict, fmt.Sprintf("group %q already has a subscription: delete it first (herald subscribe delete %s)", s.Group, s.Group))
			return
		}
		writeProblem(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	st := g.awaitRunning(r.Context(), s)
	st.Secret = s.Secret
	writeJSON(w, http.StatusCreated, st)
}

// awaitRunning waits (a little) until this server runs s, so events
// published after the answer reach the group.
func (g *Gateway) awaitRunning(ctx context.Context, s Subscription) SubscriptionStatus {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		st, ok := g.status(s)
		if ok || ctx.Err() != nil {
			return st
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// status returns s as listed, and whether this server applied it.
func (g *Gateway) status(s Subscription) (SubscriptionStatus, bool) {
	st := SubscriptionStatus{Subscription: s, State: "starting"}
	st.Secret = ""
	g.mu.Lock()
	run, ok := g.running[s.Group]
	g.mu.Unlock()
	if !ok || !run.sub.Created.Equal(s.Created) {
		return st, false
	}
	if run.err != nil {
		st.State, st.Error = "failed", run.err.Error()
	} else {
		st.State = "running"
	}
	return st, true
}

func (g *Gateway) listSubs(w http.ResponseWriter, r *http.Request) {
	subs, err := g.cfg.store.List(r.Context())
	if err != nil {
		writeProblem(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	slices.SortFunc(subs, func(a, b Subscription) int { return strings.Compare(a.Group, b.Group) })
	out := make([]SubscriptionStatus, 0, len(subs))
	for _, s := range subs {
		st, _ := g.status(s)
		out = append(out, st)
	}
	writeJSON(w, http.StatusOK, out)
}

func (g *Gateway) getSub(w http.ResponseWriter, r *http.Request) {
	s, err := g.cfg.store.Get(r.Context(), r.PathValue("group"))
	if err != nil {
		g.storeError(w, err)
		return
	}
	st, _ := g.status(s)
	writeJSON(w, http.StatusOK, st)
}

func (g *Gateway) deleteSub(w http.ResponseWriter, r *http.Request) {
	group := r.PathValue("group")
	if err := g.cfg.store.Delete(r.Context(), group); err != nil {
		g.storeError(w, err)
		return
	}
	// Wait (a little) for this server to stop it.
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if _, ok := g.GroupTopic(group); !ok {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (g *Gateway) storeError(w http.ResponseWriter, err error) {
	if errors.Is(err, ErrUnknownGroup) {
		writeProblem(w, http.StatusNotFound, err.Error())
		return
	}
	writeProblem(w, http.StatusServiceUnavailable, err.Error())
}
