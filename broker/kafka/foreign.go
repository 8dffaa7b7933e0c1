package kafka

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/broker"
)

// Foreign records.
//
// A record Herald did not publish has no herald-route header. If it carries
// CloudEvents attributes (ce_specversion, or a structured-mode content type)
// it already is an event and only its route is taken from its type (ce_type,
// or the "type" of the event in a structured-mode value). If not,
// it is a plain record from a producer that does not speak CloudEvents
// (kafka-python, a Kafka Connect sink...), and the adapter gives it the
// binary-mode headers of an event, so that a consumer decodes it like any
// other:
//
//	ce_id              kafka:<topic>/<partition>/<offset> (stable across redelivery)
//	ce_source          kafka:<topic>
//	ce_type            WithForeignTypes[topic], else the payload's JSON
//	                   "event_type" field, else the topic name
//	ce_time            the record's timestamp
//	ce_partitionkey    the record key
//	content-type       kept; application/json when absent and the payload is JSON
//
// The record's route is its type.

// Headers of the CloudEvents Kafka binding the adapter writes on foreign
// records.
const (
	ceSpecVersion = "ce_specversion"
	ceID          = "ce_id"
	ceSource      = "ce_source"
	ceType        = "ce_type"
	ceTime        = "ce_time"
	cePartKey     = "ce_partitionkey"
	ceContentType = "content-type"
	ceStructured  = "application/cloudevents"
)

// WithForeignTypes sets, per topic, the event type of records that carry
// no CloudEvents attributes (written by producers that do not use
// Herald). Default: the payload's JSON field "event_type" when it has one,
// else the topic name.
func WithForeignTypes(types map[string]string) Option {
	return func(c *config) {
		if c.foreignTypes == nil {
			c.foreignTypes = make(map[string]string, len(types))
		}
		for t, typ := range types {
			c.foreignTypes[t] = typ
		}
	}
}

// foreignType returns the event type of a foreign record of topic.
func (c *config) foreignType(topic string, value []byte) string {
	if t := c.foreignTypes[topic]; t != "" {
		return t
	}
	return payloadType(value, topic)
}

// payloadType returns the JSON field "event_type" of value when value is
// a JSON object with a usable one, else def.
func payloadType(value []byte, def string) string {
	if v := bytes.TrimLeft(value, " \t\r\n"); len(v) == 0 || v[0] != '{' {
		return def
	}
	var v struct {
		EventType string `json:"event_type"`
	}
	if json.Unmarshal(value, &v) != nil || broker.ValidateRoute(v.EventType) != nil {
		return def
	}
	return v.EventType
}

// adopt fills in the route, and the CloudEvents headers when it has none,
// of the foreign message m at sequence seq, stored at ts.
func (c *config) adopt(m *broker.Message, seq uint64, ts time.Time) {
	h := m.Header
	if _, ok := h[ceSpecVersion]; ok {
		m.Route = h[ceType]
		return
	}
	ct, hasCT := h[ceContentType]
	if strings.HasPrefix(ct, ceStructured) {
		m.Route = c.structuredType(m.Topic, m.Data)
		return
	}
	nh := make(map[string]string, len(h)+7)
	for k, v := range h {
		nh[k] = v
	}
	typ := c.foreignType(m.Topic, m.Data)
	nh[ceSpecVersion] = "1.0"
	nh[ceID] = foreignID(m.Topic, seq)
	nh[ceSource] = Scheme + ":" + m.Topic
	nh[ceType] = typ
	if !ts.IsZero() {
		nh[ceTime] = ts.UTC().Format(time.RFC3339Nano)
	}
	if m.Key != "" {
		nh[cePartKey] = m.Key
	}
	if !hasCT && json.Valid(m.Data) {
		nh[ceContentType] = "application/json"
	}
	m.Header, m.Route = nh, typ
}

// foreignID is the event id of the record at seq of topic.
func foreignID(topic string, seq uint64) string {
	p, off := seq>>48, int64(seq&offsetMask)-1
	b := make([]byte, 0, len(topic)+32)
	b = append(b, Scheme+":"...)
	b = append(b, topic...)
	b = append(b, '/')
	b = strconv.AppendUint(b, p, 10)
	b = append(b, '/')
	b = strconv.AppendInt(b, off, 10)
	return string(b)
}

// routeOf returns the route of r: its herald-route header, or for a
// foreign record the route adopt gives it.
func (s *subscription) routeOf(r *kgo.Record) string {
	if rt := headerValue(r, HeaderRoute); rt != "" {
		return rt
	}
	if t := headerValue(r, ceType); t != "" && headerValue(r, ceSpecVersion) != "" {
		return t
	}
	if strings.HasPrefix(headerValue(r, ceContentType), ceStructured) {
		return s.b.cfg.structuredType(s.topic, r.Value)
	}
	return s.b.cfg.foreignType(s.topic, r.Value)
}

// structuredType returns the route of a structured-mode record: the
// "type" attribute of the event its value holds, or the topic name when
// it has no usable one (the consumer then finds it malformed).
func (c *config) structuredType(topic string, value []byte) string {
	var v struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(value, &v) != nil || broker.ValidateRoute(v.Type) != nil {
		return topic
	}
	return v.Type
}
