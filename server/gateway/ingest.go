package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/event"
)

// Media types of the CloudEvents HTTP binding.
const (
	// ContentTypeStructured is one event in structured mode.
	ContentTypeStructured = event.ContentTypeJSON
	// ContentTypeBatch is a JSON array of structured events.
	ContentTypeBatch = "application/cloudevents-batch+json"
)

// IngestResponse is the answer to an accepted ingest request (202).
type IngestResponse struct {
	// Accepted is the number of events the broker confirmed.
	Accepted int `json:"accepted"`
	// IDs are their ids, in request order.
	IDs []string `json:"ids"`
}

// maxHeaderAttrs bounds the ce- headers of a binary-mode request.
const maxHeaderAttrs = 64

func (g *Gateway) ingest(w http.ResponseWriter, r *http.Request) {
	topic := r.PathValue("topic")
	if err := broker.ValidateName("topic", topic); err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	if r.ContentLength > g.cfg.maxBody {
		writeProblem(w, http.StatusRequestEntityTooLarge, tooLarge(r.ContentLength, g.cfg.maxBody))
		return
	}
	events, p := g.readEvents(w, r)
	if p != nil {
		writeProblemDoc(w, p)
		return
	}
	if g.cfg.topics != nil {
		if err := g.cfg.topics(r.Context(), topic); err != nil {
			if errors.Is(err, ErrUnknownTopic) {
				writeProblem(w, http.StatusNotFound, fmt.Sprintf("topic %q does not exist: create it first (herald topic retention %s, or PUT /api/v1/topics/%s/retention)", topic, topic, topic))
				return
			}
			writeProblem(w, http.StatusServiceUnavailable, fmt.Sprintf("topic %q cannot be looked up: %v", topic, err))
			return
		}
	}
	if p := g.validate(events); p != nil {
		writeProblemDoc(w, p)
		return
	}
	if err := g.c.PublishTo(r.Context(), topic, events...); err != nil {
		g.publishFailed(w, r, topic, events, err)
		return
	}
	ids := make([]string, len(events))
	for i, e := range events {
		ids[i] = e.ID
	}
	writeJSON(w, http.StatusAccepted, IngestResponse{Accepted: len(events), IDs: ids})
}

// publishFailed answers a request the broker did not confirm in full:
// 503 with the events that were not confirmed. Publishing again is safe:
// the broker keeps one copy per event id.
func (g *Gateway) publishFailed(w http.ResponseWriter, r *http.Request, topic string, events []*event.Event, err error) {
	if r.Context().Err() != nil {
		return // the client went away
	}
	g.log.Warn("gateway: publish failed", "topic", topic, "events", len(events), "error", err)
	p := &Problem{Status: http.StatusServiceUnavailable,
		Detail: fmt.Sprintf("the broker did not confirm every event (send the request again: events are stored once per id): %v", err)}
	var pe *broker.PublishError
	if errors.As(err, &pe) {
		for i, e := range events {
			if ferr := pe.Failed(i); ferr != nil {
				p.Errors = append(p.Errors, EventError{Index: i, ID: e.ID, Detail: ferr.Error()})
			}
		}
	}
	writeProblemDoc(w, p)
}

func tooLarge(n, limit int64) string {
	return fmt.Sprintf("request body of %d bytes is over the limit of %d bytes: send fewer or smaller events per request", n, limit)
}

// readEvents decodes the request's events by content mode. A problem
// means nothing is to be stored.
func (g *Gateway) readEvents(w http.ResponseWriter, r *http.Request) ([]*event.Event, *Problem) {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if ct != "" && err != nil {
		return nil, &Problem{Status: http.StatusUnsupportedMediaType, Detail: fmt.Sprintf("Content-Type %q does not parse: %v", ct, err)}
	}
	mt = strings.ToLower(mt)
	structured := mt == ContentTypeStructured || mt == ContentTypeBatch
	if !structured && strings.HasPrefix(mt, "application/cloudevents") {
		return nil, &Problem{Status: http.StatusUnsupportedMediaType,
			Detail: fmt.Sprintf("Content-Type %q: the CloudEvents formats served are %s and %s (JSON)", ct, ContentTypeStructured, ContentTypeBatch)}
	}
	if !structured && r.Header.Get("Ce-Specversion") == "" {
		return nil, &Problem{Status: http.StatusUnsupportedMediaType,
			Detail: fmt.Sprintf("not a CloudEvent: Content-Type %q without a ce-specversion header; send binary mode (ce-specversion, ce-id, ce-source, ce-type headers, the payload as body), "+
				"structured mode (%s) or a batch (%s)", ct, ContentTypeStructured, ContentTypeBatch)}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.cfg.maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &Problem{Status: http.StatusRequestEntityTooLarge, Detail: tooLarge(r.ContentLength, g.cfg.maxBody)}
		}
		return nil, &Problem{Status: http.StatusBadRequest, Detail: fmt.Sprintf("read request body: %v", err)}
	}
	switch mt {
	case ContentTypeStructured:
		e, err := event.UnmarshalJSON(body)
		if err != nil {
			return nil, &Problem{Status: http.StatusBadRequest, Detail: err.Error()}
		}
		if p := checkEvent(0, e); p != nil {
			return nil, p
		}
		return []*event.Event{e}, nil
	case ContentTypeBatch:
		return g.readBatch(body)
	}
	e, err := decodeBinary(r.Header, body)
	if err != nil {
		return nil, &Problem{Status: http.StatusBadRequest, Detail: err.Error()}
	}
	if p := checkEvent(0, e); p != nil {
		return nil, p
	}
	return []*event.Event{e}, nil
}

func (g *Gateway) readBatch(body []byte) ([]*event.Event, *Problem) {
	var raws []json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&raws); err != nil {
		return nil, &Problem{Status: http.StatusBadRequest, Detail: fmt.Sprintf("batch: want a JSON array of structured CloudEvents: %v", err)}
	}
	if dec.More() {
		return nil, &Problem{Status: http.StatusBadRequest, Detail: "batch: data after the JSON array"}
	}
	if raws == nil {
		return nil, &Problem{Status: http.StatusBadRequest, Detail: "batch: want a JSON array of structured CloudEvents, got null"}
	}
	if len(raws) == 0 {
		return nil, &Problem{Status: http.StatusBadRequest, Detail: "batch: no events"}
	}
	if len(raws) > g.cfg.maxBatch {
		return nil, &Problem{Status: http.StatusRequestEntityTooLarge,
			Detail: fmt.Sprintf("batch of %d events is over the limit of %d: split it", len(raws), g.cfg.maxBatch)}
	}
	events := make([]*event.Event, len(raws))
	var bad []EventError
	seen := make(map[string]int, len(raws))
	for i, raw := range raws {
		e, err := event.UnmarshalJSON(raw)
		if err != nil {
			bad = append(bad, EventError{Index: i, Detail: err.Error()})
			continue
		}
		if p := checkEvent(i, e); p != nil {
			bad = append(bad, p.Errors...)
			continue
		}
		if j, dup := seen[e.ID]; dup {
			bad = append(bad, EventError{Index: i, ID: e.ID, Detail: fmt.Sprintf("id %q is also the id of event %d: ids identify events, one of them would be dropped", e.ID, j)})
			continue
		}
		seen[e.ID] = i
		events[i] = e
	}
	if bad != nil {
		return nil, invalidEvents(len(raws), bad)
	}
	return events, nil
}

func invalidEvents(n int, bad []EventError) *Problem {
	return &Problem{Status: http.StatusBadRequest, Errors: bad,
		Detail: fmt.Sprintf("%d of %d events are invalid; none was stored: %s", len(bad), n, bad[0].Detail)}
}

// checkEvent applies what Herald requires beyond CloudEvents: a type that
// can route, and a time (now when the producer gave none).
func checkEvent(i int, e *event.Event) *Problem {
	if err := broker.ValidateRoute(e.Type); err != nil {
		return invalidEvents(1, []EventError{{Index: i, ID: e.ID, Detail: fmt.Sprintf("attribute \"type\" %q cannot route: %v", e.Type, err)}})
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	return nil
}

// decodeBinary reads a binary-mode event: attributes from the ce-
// headers (percent-encoded values decoded, as the HTTP binding specifies),
// datacontenttype from Content-Type, the body as data.
func decodeBinary(h http.Header, body []byte) (*event.Event, error) {
	m := make(map[string]string, 8)
	n := 0
	for k, vs := range h {
		lk := strings.ToLower(k)
		if lk != "content-type" && !strings.HasPrefix(lk, "ce-") {
			continue
		}
		if n++; n > maxHeaderAttrs {
			return nil, fmt.Errorf("%w: more than %d ce- headers", event.ErrInvalid, maxHeaderAttrs)
		}
		if len(vs) > 1 {
			return nil, fmt.Errorf("%w: header %q is repeated", event.ErrInvalid, k)
		}
		v := vs[0]
		if strings.IndexByte(v, '%') >= 0 {
			// A '%' that does not start an escape is taken as is: some
			// senders (sdk-go) do not percent-encode.
			if d, err := url.PathUnescape(v); err == nil {
				v = d
			}
		}
		m[lk] = v
	}
	if ct, ok := m["content-type"]; ok {
		// The datacontenttype is Content-Type; a ce-datacontenttype header
		// is not part of the HTTP binding.
		delete(m, "ce-datacontenttype")
		m["content-type"] = ct
	}
	return event.NATS.Decode(m, body)
}
