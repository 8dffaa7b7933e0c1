package web

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/server/admin"
)

func (h *Handler) groups(w http.ResponseWriter, r *http.Request) {
	lags, err := h.src.Admin.Lag(r.Context(), "", "")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	slices.SortStableFunc(lags, func(a, b admin.GroupLag) int { return strings.Compare(a.Group, b.Group) })
	h.render(w, r, "groups", page{Title: "Consumer groups", Nav: "groups", Data: lags})
}

type groupData struct {
	Group string
	Lags  []admin.GroupLag
	// To is the rewind position asked for; Plans its preview.
	To    string
	Plans []admin.RewindPlan
	// Replays totals Plans; NeedsStop is set when any needs the group
	// stopped.
	Replays   uint64
	NeedsStop bool
	Rewound   *admin.ReplayResult
}

func (h *Handler) groupData(r *http.Request, group string) (*groupData, error) {
	if err := broker.ValidateName("group", group); err != nil {
		return nil, fmt.Errorf("%w: %w", admin.ErrInvalid, err)
	}
	lags, err := h.src.Admin.Lag(r.Context(), "", group)
	if err != nil {
		return nil, err
	}
	if len(lags) == 0 {
		return nil, fmt.Errorf("group %q: %w: no topic has consumers of it", group, admin.ErrNotFound)
	}
	return &groupData{Group: group, Lags: lags}, nil
}

func (h *Handler) group(w http.ResponseWriter, r *http.Request) {
	d, err := h.groupData(r, r.PathValue("group"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.render(w, r, "group", page{Title: "Group " + d.Group, Nav: "groups", Data: d})
}

// pauseFor are the pause lengths the group page offers.
var pauseFor = map[string]time.Duration{"5m": 5 * time.Minute, "15m": 15 * time.Minute, "1h": time.Hour, "24h": 24 * time.Hour}

func (h *Handler) pause(w http.ResponseWriter, r *http.Request) {
	group := r.PathValue("group")
	if err := r.ParseForm(); err != nil {
		h.fail(w, r, badInput("form: %v", err))
		return
	}
	f := r.PostForm.Get("for")
	d, ok := pauseFor[f]
	if !ok {
		h.fail(w, r, badInput("pause for %q: want 5m, 15m, 1h or 24h", f))
		return
	}
	res, err := h.src.Admin.Pause(r.Context(), group, r.PostForm.Get("topic"), h.now().Add(d))
	h.afterGroupAction(w, r, group, err, func() string {
		return fmt.Sprintf("Paused %s (%d consumers) until %s.", group, res.Consumers, res.Until.UTC().Format("15:04:05 UTC"))
	})
}

func (h *Handler) resume(w http.ResponseWriter, r *http.Request) {
	group := r.PathValue("group")
	if err := r.ParseForm(); err != nil {
		h.fail(w, r, badInput("form: %v", err))
		return
	}
	res, err := h.src.Admin.Resume(r.Context(), group, r.PostForm.Get("topic"))
	h.afterGroupAction(w, r, group, err, func() string {
		return fmt.Sprintf("Resumed %s (%d consumers).", group, res.Consumers)
	})
}

// afterGroupAction shows the group page with what an action did, or
// the error it met.
func (h *Handler) afterGroupAction(w http.ResponseWriter, r *http.Request, group string, err error, flash func() string) {
	d, derr := h.groupData(r, group)
	if derr != nil {
		h.fail(w, r, derr)
		return
	}
	p := page{Title: "Group " + group, Nav: "groups", Data: d}
	if err != nil {
		if statusOf(err) >= 500 {
			h.fail(w, r, err)
			return
		}
		p.Err, p.Status = err.Error(), statusOf(err)
	} else {
		p.Flash = flash()
	}
	h.render(w, r, "group", p)
}

// parseTo reads a rewind position: first, seq:N, time:RFC3339 (as the
// CLI takes them), a bare RFC 3339 time, or a duration meaning that long
// ago ("15m").
func (h *Handler) parseTo(s string) (broker.Start, error) {
	s = strings.TrimSpace(s)
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return broker.FromTime(h.now().Add(-d)), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return broker.FromTime(t), nil
	}
	if s == "" || s == "new" {
		return broker.Start{}, badInput("rewind to %q: give first, seq:N, a time (2026-01-02T15:04:05Z) or how long ago (15m)", s)
	}
	to, err := broker.ParseStart(s)
	if err != nil {
		return broker.Start{}, badInput("rewind to: %v; or a time (2026-01-02T15:04:05Z) or how long ago (15m)", err)
	}
	return to, nil
}

// rewind previews (step=preview) or performs (step=run) a rewind.
func (h *Handler) rewind(w http.ResponseWriter, r *http.Request) {
	group := r.PathValue("group")
	if err := r.ParseForm(); err != nil {
		h.fail(w, r, badInput("form: %v", err))
		return
	}
	d, err := h.groupData(r, group)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	p := page{Title: "Group " + group, Nav: "groups", Data: d}
	d.To = strings.TrimSpace(r.PostForm.Get("to"))
	to, err := h.parseTo(d.To)
	if err != nil {
		p.Err, p.Status = err.Error(), http.StatusBadRequest
		h.render(w, r, "group", p)
		return
	}
	topic := r.PostForm.Get("topic")
	switch step := r.PostForm.Get("step"); step {
	case "", "preview":
		d.Plans, err = h.src.Admin.RewindPreview(r.Context(), group, topic, to)
		for _, pl := range d.Plans {
			d.Replays += pl.Replays
			d.NeedsStop = d.NeedsStop || pl.NeedsStop
		}
	case "run":
		d.Rewound, err = h.src.Admin.Rewind(r.Context(), group, topic, to)
		if err == nil {
			p.Flash = fmt.Sprintf("Rewound %s to %s.", group, to)
			if d, err = h.groupData(r, group); err == nil {
				p.Data = d
			}
		}
	default:
		err = badInput("step %q: want preview or run", step)
	}
	if err != nil {
		if statusOf(err) >= 500 {
			h.fail(w, r, err)
			return
		}
		p.Err, p.Status = err.Error(), statusOf(err)
	}
	h.render(w, r, "group", p)
}
