package natsjs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/broker"
)

// Foreign messages.
//
// A message that carries no CloudEvents attributes (no ce-* header, not
// structured mode) was stored by a publisher that does not
// speak CloudEvents: `nats pub`, a plain nats.go JetStream client, a
// bridge. The adapter gives it, on delivery, the binary-mode headers of an
// event, so that a consumer decodes it like any other:
//
//	ce-id               its Nats-Msg-Id when it has one (the publisher's own
//	                    id), else nats:<topic>/<stream sequence>; the same on
//	                    every redelivery
//	ce-source           nats:<topic>
//	ce-type             WithForeignTypes[topic], else the payload's JSON
//	                    "event_type" field, else the route, else the topic
//	ce-time             when the stream stored it
//	ce-partitionkey     its Herald-Key header, when set
//	ce-datacontenttype  application/json when it has no content type and
//	                    the payload is JSON
//
// A message without a route (its subject is not <stream>.<partition>.<route>)
// gets its type as route.

// Headers of the CloudEvents NATS binding the adapter writes on foreign
// messages.
const (
	cePrefix      = "ce-"
	ceSpecVersion = "ce-specversion"
	ceID          = "ce-id"
	ceSource      = "ce-source"
	ceType        = "ce-type"
	ceTime        = "ce-time"
	cePartKey     = "ce-partitionkey"
	ceContentType = "ce-datacontenttype"
	contentType   = "content-type"
	ceStructured  = "application/cloudevents"
	ceForeignPfx  = "nats:"
)

// WithForeignTypes sets, per topic, the event type of messages that carry
// no CloudEvents attributes (stored by publishers that do not use Herald).
// Default: the payload's JSON field "event_type" when it has one, else the
// message's route, else the topic name. A type that is not a valid route
// is an error.
func WithForeignTypes(types map[string]string) Option {
	return func(c *config) error {
		if c.foreignTypes == nil {
			c.foreignTypes = make(map[string]string, len(types))
		}
		for t, typ := range types {
			if err := broker.ValidateName("topic", t); err != nil {
				return fmt.Errorf("WithForeignTypes: %w", err)
			}
			if err := broker.ValidateRoute(typ); err != nil {
				return fmt.Errorf("WithForeignTypes: type of topic %q: %w", t, err)
			}
			c.foreignTypes[t] = typ
		}
		return nil
	}
}

// isEvent reports whether h carries CloudEvents attributes: a ce- header
// (any case) or a structured-mode content type. A message with some
// attributes but not all is not foreign: it is a malformed event.
func isEvent(h map[string]string) bool {
	if _, ok := h[ceSpecVersion]; ok {
		return true
	}
	for k, v := range h {
		switch {
		case len(k) >= len(cePrefix) && strings.EqualFold(k[:len(cePrefix)], cePrefix):
			return true
		case strings.EqualFold(k, contentType):
			if len(v) >= len(ceStructured) && strings.EqualFold(v[:len(ceStructured)], ceStructured) {
				return true
			}
		}
	}
	return false
}

// adopt gives the foreign message m, at stream sequence seq and stored at
// ts, the CloudEvents headers it lacks.
func (b *Broker) adopt(m *broker.Message, seq uint64, ts time.Time) {
	if isEvent(m.Header) {
		return
	}
	h := make(map[string]string, len(m.Header)+7)
	for k, v := range m.Header {
		h[k] = v
	}
	typ := b.foreignTypes[m.Topic]
	if typ == "" {
		def := m.Route
		if def == "" {
			def = m.Topic
		}
		typ = payloadType(m.Data, def)
	}
	id := m.ID
	if id == "" {
		id = ceForeignPfx + m.Topic + "/" + strconv.FormatUint(seq, 10)
	}
	h[ceSpecVersion] = "1.0"
	h[ceID] = id
	h[ceSource] = ceForeignPfx + m.Topic
	h[ceType] = typ
	if !ts.IsZero() {
		h[ceTime] = ts.UTC().Format(time.RFC3339Nano)
	}
	if m.Key != "" {
		h[cePartKey] = m.Key
	}
	if _, ok := h[contentType]; !ok && json.Valid(m.Data) {
		h[ceContentType] = "application/json"
	}
	m.Header = h
	if m.Route == "" {
		m.Route = typ
	}
}

// payloadType returns the JSON field "event_type" of data when data is a
// JSON object with a usable one, else def.
func payloadType(data []byte, def string) string {
	if v := bytes.TrimLeft(data, " \t\r\n"); len(v) == 0 || v[0] != '{' {
		return def
	}
	var v struct {
		EventType string `json:"event_type"`
	}
	if json.Unmarshal(data, &v) != nil || broker.ValidateRoute(v.EventType) != nil {
		return def
	}
	return v.EventType
}
