package web

import (
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/server/admin"
)

// AsyncAPI is an AsyncAPI 3.0 document, as JSON values.
type AsyncAPI = map[string]any

// badKey matches what an AsyncAPI component or map key may not hold.
var badKey = regexp.MustCompile(`[^A-Za-z0-9._-]`)

func key(s string) string {
	if s == "" {
		return "unknown"
	}
	return badKey.ReplaceAllString(s, "_")
}

// schemaIDOf reads the id of a dataschema reference ".../schemas/ids/N".
func schemaIDOf(ref string) (int, bool) {
	i := strings.LastIndex(ref, "/schemas/ids/")
	if i < 0 {
		return 0, false
	}
	id, err := strconv.Atoi(ref[i+len("/schemas/ids/"):])
	return id, err == nil && id > 0
}

// payloadOf returns the message payload of an event type: its registered
// schema as an AsyncAPI multi-format schema, or nil when it has none. The
// schema is the one the newest sampled event pointed at (dataschema), else
// the latest version of a subject named after the type.
func (h *Handler) payloadOf(p admin.Publication) map[string]any {
	reg := h.src.Registry
	if reg == nil {
		return nil
	}
	var sch schema.Schema
	found := false
	if id, ok := schemaIDOf(p.DataSchema); ok {
		if s, err := reg.SchemaByID(id); err == nil {
			sch, found = s, true
		}
	}
	for _, subject := range []string{p.Type, p.Type + "-value", p.Topic + "-value"} {
		if found {
			break
		}
		if v, err := reg.Version(subject, schema.Latest, false); err == nil {
			sch, found = v.Schema, true
		}
	}
	if !found {
		return nil
	}
	var parsed any
	switch sch.Type {
	case schema.JSON:
		if json.Unmarshal([]byte(sch.Text), &parsed) != nil {
			return nil
		}
		return map[string]any{"schemaFormat": "application/schema+json;version=draft-07", "schema": parsed}
	case schema.Protobuf:
		return map[string]any{"schemaFormat": "application/vnd.google.protobuf;version=3", "schema": sch.Text}
	default:
		if json.Unmarshal([]byte(sch.Text), &parsed) != nil {
			return nil
		}
		return map[string]any{"schemaFormat": "application/vnd.apache.avro+json;version=1.9.0", "schema": parsed}
	}
}

// asyncAPIDoc describes the running system as AsyncAPI 3.0: channels are
// topics, messages the event types seen on them with their registered
// schemas, operations the services publishing them (send) and the
// consumer groups reading the topics (receive).
func (h *Handler) asyncAPIDoc(topo *admin.Topology, sample int) AsyncAPI {
	channels := map[string]any{}
	messages := map[string]any{}
	operations := map[string]any{}
	chanMsgs := map[string]map[string]any{}
	for _, topic := range topo.Topics {
		chanMsgs[key(topic)] = map[string]any{}
	}
	for _, p := range topo.Publications {
		ck, mk := key(p.Topic), key(p.Type)
		if chanMsgs[ck] == nil {
			chanMsgs[ck] = map[string]any{}
		}
		if _, ok := messages[mk]; !ok {
			m := map[string]any{
				"name":          p.Type,
				"title":         p.Type,
				"correlationId": map[string]any{"location": "$message.header#/ce-correlationid"},
			}
			if p.ContentType != "" {
				m["contentType"] = p.ContentType
			}
			if pl := h.payloadOf(p); pl != nil {
				m["payload"] = pl
			}
			messages[mk] = m
		}
		chanMsgs[ck][mk] = map[string]any{"$ref": "#/components/messages/" + mk}
		opKey := "publish." + key(p.Source) + "." + mk + "." + ck
		operations[opKey] = map[string]any{
			"action":           "send",
			"channel":          map[string]any{"$ref": "#/channels/" + ck},
			"messages":         []any{map[string]any{"$ref": "#/channels/" + ck + "/messages/" + mk}},
			"summary":          p.Source + " publishes " + p.Type + " on " + p.Topic,
			"x-herald-sampled": p.Count,
		}
	}
	for ck, ms := range chanMsgs {
		topic := ck
		for _, t := range topo.Topics {
			if key(t) == ck {
				topic = t
			}
		}
		channels[ck] = map[string]any{"address": topic, "messages": ms, "title": topic}
	}
	for _, c := range topo.Consumptions {
		ck := key(c.Topic)
		if _, ok := channels[ck]; !ok {
			channels[ck] = map[string]any{"address": c.Topic, "messages": map[string]any{}, "title": c.Topic}
		}
		ms := channels[ck].(map[string]any)["messages"].(map[string]any)
		refs := make([]any, 0, len(ms))
		names := make([]string, 0, len(ms))
		for mk := range ms {
			names = append(names, mk)
		}
		slices.Sort(names)
		for _, mk := range names {
			refs = append(refs, map[string]any{"$ref": "#/channels/" + ck + "/messages/" + mk})
		}
		operations["consume."+key(c.Group)+"."+ck] = map[string]any{
			"action":   "receive",
			"channel":  map[string]any{"$ref": "#/channels/" + ck},
			"messages": refs,
			"summary":  "consumer group " + c.Group + " reads " + c.Topic,
		}
	}
	doc := AsyncAPI{
		"asyncapi": "3.0.0",
		"info": map[string]any{
			"title":   "Herald",
			"version": h.now().UTC().Format(time.RFC3339),
			"description": "The event types, topics and consumer groups of a running Herald, read from the newest " +
				strconv.Itoa(sample) + " messages of each topic and the groups' consumers.",
		},
		"defaultContentType": "application/json",
		"channels":           channels,
		"operations":         operations,
		"components":         map[string]any{"messages": messages},
	}
	if h.brokerURL != "" {
		if u, err := url.Parse(strings.Split(h.brokerURL, ",")[0]); err == nil && u.Host != "" {
			protocol := u.Scheme
			switch protocol {
			case "tls":
				protocol = "nats"
			case "amqps":
				protocol = "amqps"
			}
			doc["servers"] = map[string]any{"herald": map[string]any{"host": u.Host, "protocol": protocol}}
		}
	}
	return doc
}

func (h *Handler) asyncapi(w http.ResponseWriter, r *http.Request) {
	topo, err := h.topologyFor(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	sample := h.sample
	if s := r.URL.Query().Get("sample"); s != "" {
		sample, _ = strconv.Atoi(s) // checked by topologyFor
	}
	b, err := json.MarshalIndent(h.asyncAPIDoc(topo, sample), "", "  ")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(append(b, '\n'))
}
