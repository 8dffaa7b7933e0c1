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

// readBatch decodes a JSON batch in one pass: each member is decoded once,
// as it is reached, and a batch over the limit is refused once the limit is
// passed.
func (g *Gateway) readBatch(body []byte) ([]*event.Event, *Problem) {
	const want = "batch: want a JSON array of structured CloudEvents"
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	switch {
	case err == io.EOF:
		return nil, &Problem{Status: http.StatusBadRequest, Detail: want + ", got an empty body"}
	case err != nil:
		return nil, &Problem{Status: http.StatusBadRequest, Detail: fmt.Sprintf("%s: %v", want, err)}
	case tok == nil:
		return nil, &Problem{Status: http.StatusBadRequest, Detail: want + ", got null"}
	case tok != json.Delim('['):
		return nil, &Problem{Status: http.StatusBadRequest, Detail: fmt.Sprintf("%s, got %s", want, describeToken(tok))}
	}
	var events []*event.Event
	var bad []EventError
	seen := map[string]int{}
	for i := 0; dec.More(); i++ {
		if i == g.cfg.maxBatch {
			return nil, &Problem{Status: http.StatusRequestEntityTooLarge,
				Detail: fmt.Sprintf("batch of more than %d events is over the limit of %d: split it", g.cfg.maxBatch, g.cfg.maxBatch)}
		}
		var raw map[string]json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			var te *json.UnmarshalTypeError
			if !errors.As(err, &te) {
				return nil, &Problem{Status: http.StatusBadRequest, Detail: fmt.Sprintf("%s: event %d: %v", want, i, err)}
			}
			// A member that is not an object was read whole: say so
			// and go on with the others.
			bad = append(bad, EventError{Index: i, Detail: fmt.Sprintf("%v: structured JSON: expected an object, got %s", event.ErrInvalid, te.Value)})
			events = append(events, nil)
			continue
		}
		if raw == nil {
			bad = append(bad, EventError{Index: i, Detail: fmt.Sprintf("%v: structured JSON: expected an object", event.ErrInvalid)})
			events = append(events, nil)
			continue
		}
		e, err := event.UnmarshalJSONObject(raw)
		events = append(events, e)
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
	}
	if _, err := dec.Token(); err != nil { // the closing bracket
		if err == io.EOF {
			return nil, &Problem{Status: http.StatusBadRequest, Detail: want + ": the body ends before the array is closed"}
		}
		return nil, &Problem{Status: http.StatusBadRequest, Detail: fmt.Sprintf("%s: %v", want, err)}
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, &Problem{Status: http.StatusBadRequest, Detail: "batch: data after the JSON array"}
	}
	if len(events) == 0 {
		return nil, &Problem{Status: http.StatusBadRequest, Detail: "batch: no events"}
	}
	if bad != nil {
		return nil, invalidEvents(len(events), bad)
	}
	return events, nil
}

// describeToken names what a JSON document holds where an array was wanted.
func describeToken(tok json.Token) string {
	switch t := tok.(type) {
	case json.Delim:
		if t == '{' {
			return "an object"
		}
		return fmt.Sprintf("%q", string(t))
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case float64, json.Number:
		return "a number"
	}
	return fmt.Sprintf("%v", tok)
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
