package web

import (
	"fmt"
	"net/http"
	"slices"

	"github.com/heraldhq/herald/projection"
)

// projectionStates are the states the projection list filters by.
var projectionStates = []projection.State{projection.StateRunning, projection.StateRebuilding, projection.StateStopped, projection.StateFailed}

type projectionsData struct {
	State       projection.State
	States      []projection.State
	Projections []projection.Status
	Total       int
}

func (h *Handler) projections(w http.ResponseWriter, r *http.Request) {
	var state projection.State
	if s := r.URL.Query().Get("state"); s != "" {
		state = projection.State(s)
		if !slices.Contains(projectionStates, state) {
			h.fail(w, r, badInput("state %q: want running, rebuilding, stopped or failed", s))
			return
		}
	}
	ps, err := h.src.Admin.Projections(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := projectionsData{State: state, States: projectionStates, Total: len(ps)}
	for _, p := range ps {
		if state == "" || p.State == state {
			d.Projections = append(d.Projections, p)
		}
	}
	h.render(w, r, "projections", page{Title: "Projections", Nav: "projections", Data: &d})
}

func (h *Handler) projection(w http.ResponseWriter, r *http.Request) {
	st, err := h.src.Admin.Projection(r.Context(), r.PathValue("name"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.render(w, r, "projection", page{Title: "Projection " + st.Name, Nav: "projections", Data: st})
}

// rebuildProjection asks for a rebuild and shows the projection, whose
// page then follows the rebuild's progress.
func (h *Handler) rebuildProjection(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	st, err := h.src.Admin.RebuildProjection(r.Context(), name)
	if err != nil {
		code := statusOf(err)
		cur, lerr := h.src.Admin.Projection(r.Context(), name)
		if code >= 500 || lerr != nil {
			h.fail(w, r, err)
			return
		}
		h.render(w, r, "projection", page{Title: "Projection " + name, Nav: "projections", Data: cur, Err: err.Error(), Status: code})
		return
	}
	h.render(w, r, "projection", page{Title: "Projection " + name, Nav: "projections", Data: st,
		Flash: fmt.Sprintf("Asked for a rebuild of %s: the projector running it starts within a second.", name)})
}

// rebuildPercent is how far a rebuild got, 0 to 100.
func rebuildPercent(r *projection.RebuildStatus) int {
	if r == nil || r.Target == 0 {
		if r != nil && !r.Ended.IsZero() && r.Error == "" {
			return 100
		}
		return 0
	}
	return int(min(100, r.Position*100/r.Target))
}
