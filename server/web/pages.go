package web

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/server/admin"
	"github.com/heraldhq/herald/server/audit"
)

// Sparkline windows: 30 of one minute.
const (
	sparkWindows = 30
	sparkWidth   = time.Minute
)

type topicRow struct {
	admin.TopicInfo
	// Rate is messages per second over the last window.
	Rate    float64
	Traffic []uint64
	// Groups counts the consumer groups reading the topic.
	Groups int
}

type overviewData struct {
	Topics []topicRow
	Groups []admin.GroupLag
	// DLQTotal is the depth of every dead-letter topic together.
	DLQTotal uint64
	// Paused are the groups an operator (or a rewind) paused.
	Paused []admin.GroupLag
	// Breakers are the circuit breakers the groups' routers reported, by
	// group; BreakerList the same in order. BreakersOff says why there
	// are none to read (events live on a broker other than JetStream).
	Breakers    map[string]*admin.GroupBreakers
	BreakerList []admin.GroupBreakers
	BreakersOff string
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ts, err := h.src.Admin.Topics(ctx)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	lags, err := h.src.Admin.Lag(ctx, "", "")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := overviewData{Groups: lags, Breakers: map[string]*admin.GroupBreakers{}}
	bs, err := h.src.Admin.Breakers(ctx)
	switch {
	case errors.Is(err, admin.ErrUnsupported):
		d.BreakersOff = "Circuit breaker states are read from JetStream; events live on another broker here, so they are not shown (each service exports herald_breaker_state)."
	case err != nil:
		h.fail(w, r, err)
		return
	}
	d.BreakerList = bs
	for i := range bs {
		d.Breakers[bs[i].Group] = &bs[i]
	}
	groups := map[string]int{}
	for _, g := range lags {
		groups[g.Topic]++
		if g.Paused {
			d.Paused = append(d.Paused, g)
		}
	}
	for _, t := range ts {
		if t.DeadLetter {
			d.DLQTotal += t.Messages
			continue
		}
		if t.Topic == consumer.BreakerTopic {
			continue // shown as the circuit breakers below
		}
		row := topicRow{TopicInfo: t, Groups: groups[t.Topic]}
		traffic, err := h.src.Admin.Traffic(ctx, t.Topic, sparkWindows, sparkWidth)
		if err != nil && !errors.Is(err, admin.ErrNotFound) {
			h.fail(w, r, err)
			return
		}
		row.Traffic = traffic
		if len(traffic) > 0 {
			row.Rate = float64(traffic[len(traffic)-1]) / sparkWidth.Seconds()
		}
		d.Topics = append(d.Topics, row)
	}
	h.render(w, r, "overview", page{Title: "Overview", Nav: "overview", Data: d})
}

// searchFields are the fields the topic page searches by. The audit log
// answers correlation, subject and type; id and header are matched in
// the newest messages of the topic.
var searchFields = []string{"correlation", "subject", "type", "id", "header"}

// scanDepth is how many of a topic's newest messages a search by id or
// header reads.
const scanDepth = 5000

type topicData struct {
	Topic  admin.TopicInfo
	Groups []admin.GroupLag
	Events []admin.Message
	// Next is the before of the next page of events, 0 on the last.
	Next uint64
	// Search is the search shown, when there is one.
	Search *searchData
	Fields []string
}

type searchData struct {
	Field, Q string
	// Results are audit records (correlation, subject, type) or
	// messages (id, header).
	Records  []audit.Record
	Messages []admin.Message
	// Scanned says how many of the newest messages were searched, for
	// the fields matched by reading the topic.
	Scanned int
	Err     string
}

func (h *Handler) topic(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.PathValue("topic")
	info, err := h.topicInfo(r, name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	var before uint64
	if s := q.Get("before"); s != "" {
		if before, err = strconv.ParseUint(s, 10, 64); err != nil || before == 0 {
			h.fail(w, r, badInput("before %q: want a positive sequence number", s))
			return
		}
	}
	d := topicData{Topic: *info, Fields: searchFields}
	if d.Groups, err = h.src.Admin.Lag(ctx, name, ""); err != nil {
		h.fail(w, r, err)
		return
	}
	if d.Events, d.Next, err = h.src.Admin.Messages(ctx, name, before, 50); err != nil {
		h.fail(w, r, err)
		return
	}
	p := page{Title: "Topic " + name, Nav: "overview", Data: &d}
	if field, text := q.Get("field"), strings.TrimSpace(q.Get("q")); field != "" || text != "" {
		d.Search = h.search(r, name, field, text)
		if d.Search.Err != "" {
			p.Status = http.StatusBadRequest
		}
	}
	h.render(w, r, "topic", p)
}

func (h *Handler) topicInfo(r *http.Request, name string) (*admin.TopicInfo, error) {
	ts, err := h.src.Admin.Topics(r.Context())
	if err != nil {
		return nil, err
	}
	for i := range ts {
		if ts[i].Topic == name {
			return &ts[i], nil
		}
	}
	return nil, fmt.Errorf("topic %q: %w: see the overview for the topics there are", name, admin.ErrNotFound)
}

// search runs a topic page search. Malformed searches come back with Err
// set, shown in the page.
func (h *Handler) search(r *http.Request, topic, field, text string) *searchData {
	s := &searchData{Field: field, Q: text}
	if text == "" {
		s.Err = "type something to search for"
		return s
	}
	if len(text) > 1024 {
		s.Err = "the search is longer than 1024 characters"
		return s
	}
	switch field {
	case "correlation", "subject", "type":
		if h.src.Audit == nil {
			s.Err = "searching by " + field + " needs the audit log, which is off on this server (herald serve --audit off)"
			return s
		}
		aq := audit.Query{Topic: topic, Limit: 200}
		switch field {
		case "correlation":
			aq.CorrelationID = text
		case "subject":
			aq.Subject = text
		case "type":
			aq.Type = text
		}
		if err := aq.Validate(); err != nil {
			s.Err = err.Error()
			return s
		}
		recs, err := h.src.Audit.Query(r.Context(), aq)
		if err != nil {
			s.Err = err.Error()
			return s
		}
		s.Records = recs
	case "id", "header":
		name, value, ok := text, "", true
		if field == "header" {
			name, value, ok = strings.Cut(text, "=")
			name = strings.TrimSpace(name)
			if !ok || name == "" {
				s.Err = fmt.Sprintf("header search %q: want NAME=VALUE, for example ce-source=orders", text)
				return s
			}
		}
		msgs, _, err := h.src.Admin.Messages(r.Context(), topic, 0, scanDepth)
		if err != nil {
			s.Err = err.Error()
			return s
		}
		s.Scanned = len(msgs)
		for _, m := range msgs {
			if field == "id" && m.ID == text || field == "header" && headerMatch(m.Headers, name, strings.TrimSpace(value)) {
				m.Data = nil
				s.Messages = append(s.Messages, m)
			}
		}
	default:
		s.Err = fmt.Sprintf("search field %q: want one of %s", field, strings.Join(searchFields, ", "))
	}
	return s
}

func headerMatch(h map[string]string, name, value string) bool {
	for k, v := range h {
		if strings.EqualFold(k, name) && v == value {
			return true
		}
	}
	return false
}

type eventData struct {
	Msg *admin.Message
	// Headers sorted by name.
	Headers [][2]string
	Payload decoded
	// History is every copy of the event the audit log holds: as
	// published, dead-lettered, redriven.
	History []audit.Record
	// Trace is the causation tree of its correlation id.
	Trace     []*treeNode
	TraceNote string
	// Entry is the dead letter, when the event is one.
	Entry *admin.Entry
}

func (h *Handler) event(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	topic, s := r.PathValue("topic"), r.PathValue("seq")
	seq, err := strconv.ParseUint(s, 10, 64)
	if err != nil || seq == 0 {
		h.fail(w, r, badInput("event %q of topic %q: want a positive sequence number", s, topic))
		return
	}
	msg, err := h.src.Admin.Message(ctx, topic, seq)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := eventData{Msg: msg, Payload: h.decode(msg.Data, msg.ContentType)}
	for k, v := range msg.Headers {
		d.Headers = append(d.Headers, [2]string{k, v})
	}
	slices.SortFunc(d.Headers, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	if consumer.IsDeadLetterTopic(topic) {
		if e, err := h.src.Admin.DLQEntry(ctx, admin.FormatEntryID(topic, seq)); err == nil {
			d.Entry = e
		}
	}
	switch {
	case h.src.Audit == nil:
		d.TraceNote = "The audit log is off on this server: no delivery history or causation tree."
	case msg.CorrelationID == "":
		d.TraceNote = "The event has no correlation id: no causation tree."
		if msg.Subject != "" {
			d.History = h.history(r, audit.Query{Subject: msg.Subject, Limit: audit.MaxLimit, NoPayload: true}, msg.ID)
		}
	default:
		recs, err := h.src.Audit.Query(ctx, audit.Query{CorrelationID: msg.CorrelationID, Limit: audit.MaxLimit, NoPayload: true})
		if err != nil {
			d.TraceNote = "The audit log did not answer: " + err.Error()
			break
		}
		for _, rec := range recs {
			if rec.ID == msg.ID {
				d.History = append(d.History, rec)
			}
		}
		d.Trace = timedTree(audit.Tree(recs))
		if len(recs) == audit.MaxLimit {
			d.TraceNote = fmt.Sprintf("The correlation id has more than %d events; the tree shows the first %d.", audit.MaxLimit, audit.MaxLimit)
		}
	}
	h.render(w, r, "event", page{Title: "Event " + msg.ID, Nav: "overview", Data: &d})
}

func (h *Handler) history(r *http.Request, q audit.Query, id string) []audit.Record {
	recs, err := h.src.Audit.Query(r.Context(), q)
	if err != nil {
		return nil
	}
	var out []audit.Record
	for _, rec := range recs {
		if rec.ID == id {
			out = append(out, rec)
		}
	}
	return out
}

type traceData struct {
	CorrelationID string
	Roots         []*treeNode
	Events        int
	Truncated     bool
}

func (h *Handler) trace(w http.ResponseWriter, r *http.Request) {
	corr := r.PathValue("correlation")
	if h.src.Audit == nil {
		h.fail(w, r, fmt.Errorf("%w: the audit log is off on this server (herald serve --audit off): no traces", admin.ErrNotFound))
		return
	}
	q := audit.Query{CorrelationID: corr, Limit: audit.MaxLimit, NoPayload: true}
	if err := q.Validate(); err != nil {
		h.fail(w, r, err)
		return
	}
	recs, err := h.src.Audit.Query(r.Context(), q)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if len(recs) == 0 {
		h.fail(w, r, fmt.Errorf("%w: no events with correlation id %q in the audit log", admin.ErrNotFound, corr))
		return
	}
	d := traceData{CorrelationID: corr, Roots: timedTree(audit.Tree(recs)), Events: len(recs), Truncated: len(recs) == q.Limit}
	h.render(w, r, "trace", page{Title: "Trace " + corr, Nav: "overview", Data: &d})
}

// treeNode is a causation tree node with its time after the tree's first
// event.
type treeNode struct {
	*audit.Node
	After time.Duration
	Kids  []*treeNode
}

func timedTree(roots []*audit.Node) []*treeNode {
	var first time.Time
	var walk func([]*audit.Node)
	walk = func(ns []*audit.Node) {
		for _, n := range ns {
			if first.IsZero() || n.Time.Before(first) {
				first = n.Time
			}
			walk(n.Children)
		}
	}
	walk(roots)
	var build func([]*audit.Node) []*treeNode
	build = func(ns []*audit.Node) []*treeNode {
		out := make([]*treeNode, 0, len(ns))
		for _, n := range ns {
			out = append(out, &treeNode{Node: n, After: n.Time.Sub(first), Kids: build(n.Children)})
		}
		return out
	}
	return build(roots)
}
