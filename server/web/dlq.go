package web

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/server/admin"
)

// dlqScan is the most dead letters the DLQ page reads to group them; the
// table shows the first dlqShown that match.
const (
	dlqScan  = 10_000
	dlqShown = 200
)

func (h *Handler) dlqs(w http.ResponseWriter, r *http.Request) {
	ds, err := h.src.Admin.DLQs(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	slices.SortFunc(ds, func(a, b admin.DLQ) int { return strings.Compare(a.Topic, b.Topic) })
	h.render(w, r, "dlqs", page{Title: "Dead letters", Nav: "dlq", Data: ds})
}

// errorGroup is the dead letters that failed with one error text.
type errorGroup struct {
	Error       string
	Count       int
	Types       []string
	Groups      []string
	First, Last time.Time
	// Filter selects exactly this group's entries.
	Filter string
}

type dlqData struct {
	Topic    string
	DLQTopic string
	Filter   string
	// Total is how many dead letters the topic holds (read), Matching how
	// many the filter keeps.
	Total, Matching int
	// Capped says the topic holds more than the page reads.
	Capped  bool
	Groups  []errorGroup
	Entries []admin.Entry
	// Keys are the filter's field names, for the help text.
	Keys []string
}

func (h *Handler) dlq(w http.ResponseWriter, r *http.Request) {
	topic := r.PathValue("topic")
	filter := strings.TrimSpace(r.URL.Query().Get("filter"))
	d, status, err := h.dlqData(r, topic, filter)
	if err != nil && d == nil {
		h.fail(w, r, err)
		return
	}
	p := page{Title: "Dead letters of " + topic, Nav: "dlq", Data: d, Status: status}
	if err != nil {
		p.Err = err.Error()
	}
	h.render(w, r, "dlq", p)
}

// dlqData reads topic's dead letters and groups those filter keeps. A
// malformed filter returns the page data with the error to show and a
// 400 status; an unknown topic returns no data.
func (h *Handler) dlqData(r *http.Request, topic, filter string) (*dlqData, int, error) {
	if err := broker.ValidateName("topic", topic); err != nil {
		return nil, 0, fmt.Errorf("%w: %w", admin.ErrInvalid, err)
	}
	d := &dlqData{Topic: topic, DLQTopic: admin.DeadLetterTopicOf(topic), Filter: filter, Keys: admin.FilterKeys}
	f, ferr := admin.ParseFilter(filter)
	var after uint64
	for d.Total < dlqScan {
		es, next, err := h.src.Admin.DLQEntries(r.Context(), topic, after, min(1000, dlqScan-d.Total))
		if err != nil {
			return nil, 0, err
		}
		d.Total += len(es)
		if ferr == nil {
			addEntries(d, f, es)
		}
		if next == 0 {
			break
		}
		after = next
		d.Capped = d.Total >= dlqScan
	}
	slices.SortFunc(d.Groups, func(a, b errorGroup) int { return b.Count - a.Count })
	if ferr != nil {
		return d, http.StatusBadRequest, ferr
	}
	return d, 0, nil
}

func addEntries(d *dlqData, f admin.Filter, es []admin.Entry) {
	for i := range es {
		e := &es[i]
		if !f.Match(e) {
			continue
		}
		d.Matching++
		if len(d.Entries) < dlqShown {
			d.Entries = append(d.Entries, *e)
		}
		var g *errorGroup
		for j := range d.Groups {
			if d.Groups[j].Error == e.Error {
				g = &d.Groups[j]
				break
			}
		}
		if g == nil {
			d.Groups = append(d.Groups, errorGroup{Error: e.Error, First: e.Stored, Filter: errorFilter(d.Filter, e.Error)})
			g = &d.Groups[len(d.Groups)-1]
		}
		g.Count++
		g.Last = e.Stored
		if !slices.Contains(g.Types, e.Type) && len(g.Types) < 10 {
			g.Types = append(g.Types, e.Type)
		}
		if e.Group != "" && !slices.Contains(g.Groups, e.Group) && len(g.Groups) < 10 {
			g.Groups = append(g.Groups, e.Group)
		}
	}
}

// errorFilter narrows filter to entries whose error is exactly msg.
func errorFilter(filter, msg string) string {
	cond := "error~=^" + regexp.QuoteMeta(msg) + "$"
	if filter == "" {
		return cond
	}
	return filter + "," + cond
}

// redriveData is the redrive page: a preview to confirm, or the result.
type redriveData struct {
	Topic  string
	Filter string
	// All is set when the selection is every entry the filter keeps; IDs
	// otherwise.
	All bool
	IDs []string
	Res *admin.RedriveResult
	// Limit caps the confirmed redrive at what the preview counted when
	// the preview listed only part of the selection.
	Limit int
	// Failed are the items a real run did not redrive.
	Failed []admin.RedriveItem
}

// redrive previews (step=preview, the default) or performs (step=run) a
// redrive of the selected entries: the ids ticked, or every entry the
// filter keeps (all=1).
func (h *Handler) redrive(w http.ResponseWriter, r *http.Request) {
	topic := r.PathValue("topic")
	if err := r.ParseForm(); err != nil {
		h.fail(w, r, badInput("form: %v", err))
		return
	}
	d := redriveData{Topic: topic, Filter: strings.TrimSpace(r.PostForm.Get("filter")), All: r.PostForm.Get("all") == "1"}
	req := admin.RedriveRequest{Topic: topic, Filter: d.Filter}
	if !d.All {
		d.IDs = r.PostForm["id"]
		if len(d.IDs) == 0 {
			h.fail(w, r, badInput("no dead letters selected: tick some, or “all matching the filter”"))
			return
		}
		if len(d.IDs) > 10_000 {
			h.fail(w, r, badInput("%d dead letters selected: at most 10000 at once; use “all matching the filter”", len(d.IDs)))
			return
		}
		dlq := admin.DeadLetterTopicOf(topic)
		for _, id := range d.IDs {
			t, _, err := admin.ParseEntryID(id)
			if err != nil {
				h.fail(w, r, err)
				return
			}
			if t != dlq {
				h.fail(w, r, badInput("dead letter %q is not in %s", id, dlq))
				return
			}
		}
		req.IDs = d.IDs
	}
	if s := r.PostForm.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			h.fail(w, r, badInput("limit %q: want a positive number", s))
			return
		}
		req.Limit = n
	}
	switch step := r.PostForm.Get("step"); step {
	case "", "preview":
		req.DryRun = true
	case "run":
	default:
		h.fail(w, r, badInput("step %q: want preview or run", step))
		return
	}
	res, err := h.src.Admin.Redrive(r.Context(), req)
	if err != nil {
		code := statusOf(err)
		if code >= 500 {
			h.fail(w, r, err)
			return
		}
		h.render(w, r, "redrive", page{Title: "Redrive dead letters of " + topic, Nav: "dlq", Data: &d, Err: err.Error(), Status: code})
		return
	}
	d.Res = res
	p := page{Title: "Redrive dead letters of " + topic, Nav: "dlq", Data: &d}
	if res.DryRun {
		if d.All && res.Truncated {
			// The preview lists part of the selection: the run takes no
			// more than was counted, even if more fail meanwhile.
			d.Limit = res.Matched
		} else if d.All {
			// Confirm exactly what was previewed.
			d.All = false
			d.IDs = d.IDs[:0]
			for _, it := range res.Items {
				d.IDs = append(d.IDs, it.ID)
			}
		}
	} else {
		for _, it := range res.Items {
			if it.Failed != "" {
				d.Failed = append(d.Failed, it)
			}
		}
		p.Flash = fmt.Sprintf("Redrove %d of %d dead letters to %s.", res.Redriven, res.Matched, topic)
		if res.Failed > 0 {
			p.Err = fmt.Sprintf("%d were not redriven (see below): purged or redriven by someone else meanwhile?", res.Failed)
		}
	}
	h.render(w, r, "redrive", p)
}

func (h *Handler) purge(w http.ResponseWriter, r *http.Request) {
	topic := r.PathValue("topic")
	if err := broker.ValidateName("topic", topic); err != nil {
		h.fail(w, r, fmt.Errorf("%w: %w", admin.ErrInvalid, err))
		return
	}
	if err := r.ParseForm(); err != nil {
		h.fail(w, r, badInput("form: %v", err))
		return
	}
	confirm := strings.TrimSpace(r.PostForm.Get("confirm"))
	n, err := h.src.Admin.PurgeDLQ(r.Context(), topic, confirm)
	if err != nil {
		d, _, derr := h.dlqData(r, topic, "")
		if derr != nil || statusOf(err) >= 500 {
			h.fail(w, r, err)
			return
		}
		h.render(w, r, "dlq", page{Title: "Dead letters of " + topic, Nav: "dlq", Data: d, Err: err.Error(), Status: statusOf(err)})
		return
	}
	d, _, err := h.dlqData(r, topic, "")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.render(w, r, "dlq", page{Title: "Dead letters of " + topic, Nav: "dlq", Data: d,
		Flash: fmt.Sprintf("Purged %d dead letters of %s.", n, topic)})
}
