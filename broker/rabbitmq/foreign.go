package rabbitmq

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/heraldhq/herald/broker"
)

// Foreign messages.
//
// A message Herald did not publish (no herald-ts header) that carries no
// CloudEvents attributes (no cloudEvents_specversion, not structured mode)
// comes from a producer that does not speak CloudEvents (pika, a shovel,
// an AMQP 1.0 client...). The adapter gives it the binary-mode headers of
// an event, so a consumer decodes it like any other:
//
//	cloudEvents_id      the AMQP message-id; without one, "amqp:<topic>/" and
//	                    a hash of routing key, headers and body, the same on
//	                    every redelivery (two identical messages without a
//	                    message-id are then one event to a deduplicating consumer)
//	cloudEvents_source  amqp:<topic>
//	cloudEvents_type    WithForeignTypes[topic], else the body's JSON
//	                    "event_type" field, else the routing key, else the topic
//	cloudEvents_time    the AMQP timestamp property, when set
//	content-type        kept; application/json when absent and the body is JSON
//
// The route stays the routing key.

const (
	ceSpecVersion    = "cloudEvents_specversion"
	ceSpecVersionAlt = "cloudEvents:specversion"
	ceID             = "cloudEvents_id"
	ceSource         = "cloudEvents_source"
	ceType           = "cloudEvents_type"
	ceTime           = "cloudEvents_time"
	ceStructured     = "application/cloudevents"
)

// WithForeignTypes sets, per topic, the event type of messages that carry
// no CloudEvents attributes (published by clients that do not use
// Herald). Default: the body's JSON field "event_type" when it has one,
// else the routing key, else the topic name.
func WithForeignTypes(types map[string]string) Option {
	return func(o *options) {
		if o.foreignTypes == nil {
			o.foreignTypes = make(map[string]string, len(types))
		}
		for t, typ := range types {
			o.foreignTypes[t] = typ
		}
	}
}

// adopt gives the foreign message m, stored at ts (zero: unknown), the
// CloudEvents headers it lacks.
func (o *options) adopt(m *broker.Message, ts time.Time) {
	h := m.Header
	if _, ok := h[ceSpecVersion]; ok {
		return
	}
	if _, ok := h[ceSpecVersionAlt]; ok {
		return
	}
	ct, hasCT := h[hCT]
	if strings.HasPrefix(ct, ceStructured) {
		return
	}
	id := m.ID
	if id == "" {
		id = contentID(m)
	}
	typ := o.foreignTypes[m.Topic]
	if typ == "" {
		typ = m.Route
		if typ == "" {
			typ = m.Topic
		}
		typ = payloadType(m.Data, typ)
	}
	h[ceSpecVersion] = "1.0"
	h[ceID] = id
	h[ceSource] = "amqp:" + m.Topic
	h[ceType] = typ
	if !ts.IsZero() {
		h[ceTime] = ts.UTC().Format(time.RFC3339Nano)
	}
	if !hasCT && json.Valid(m.Data) {
		h[hCT] = "application/json"
	}
}

// contentID derives an id from what RabbitMQ redelivers unchanged: the
// topic, the route, the headers and the body.
func contentID(m *broker.Message) string {
	hs := sha256.New()
	w := func(s string) {
		hs.Write([]byte(s))
		hs.Write([]byte{0})
	}
	w(m.Topic)
	w(m.Route)
	keys := make([]string, 0, len(m.Header))
	for k := range m.Header {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		w(k)
		w(m.Header[k])
	}
	hs.Write(m.Data)
	return "amqp:" + m.Topic + "/" + hex.EncodeToString(hs.Sum(nil)[:12])
}

// payloadType returns the JSON field "event_type" of body when body is a
// JSON object with a usable one, else def.
func payloadType(body []byte, def string) string {
	if v := bytes.TrimLeft(body, " \t\r\n"); len(v) == 0 || v[0] != '{' {
		return def
	}
	var v struct {
		EventType string `json:"event_type"`
	}
	if json.Unmarshal(body, &v) != nil || broker.ValidateRoute(v.EventType) != nil {
		return def
	}
	return v.EventType
}
