package auth

import (
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/jwt/v2"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/consumer"
)

// AuditTopic is the topic Herald records administrative actions in. Only
// operators read it.
const AuditTopic = "herald.audit"

// Buckets every key-ordered group uses (broker/natsjs): members heartbeat
// in one, partitions released cleanly are noted in the other.
var groupBuckets = []string{"herald_members", "herald_handover"}

// ParseTopics reads a comma-separated list of topics. "T.>" (every event
// type of topic T, as a NATS subject pattern over "<topic>.<type>" reads)
// is taken as T. Wildcards in topic names are refused: permissions are
// granted per topic.
func ParseTopics(list string) ([]string, error) {
	var out []string
	for _, t := range strings.Split(list, ",") {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		t = strings.TrimSuffix(t, ".>")
		if strings.ContainsAny(t, "*>") {
			return nil, fmt.Errorf("topic %q: wildcards are not supported; list the topics", t)
		}
		if err := broker.ValidateName("topic", t); err != nil {
			return nil, err
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out, nil
}

// ServicePermissions returns the NATS permissions of a service that
// publishes to the topics in publish and consumes the topics in subscribe,
// with replies on inbox ("_INBOX_<name>").
//
// A service may: publish events to its publish topics; create, read and
// pull from consumers of its subscribe topics and acknowledge their
// messages; publish dead letters to the dead-letter topics of its
// subscribe topics (its consumers dead-letter what they cannot handle);
// report its circuit breakers to consumer.BreakerTopic; read the info of
// those streams; use the group-membership buckets of
// key-ordered groups; receive on its own inbox. Everything else is
// refused by the broker: other topics, dead-letter and audit topics
// (reading), stream and bucket creation, deletion and purging, consumer
// deletion, and core subscriptions to stream subjects.
func ServicePermissions(inbox string, publish, subscribe []string) *jwt.Permissions {
	var pub []string
	add := func(s ...string) {
		for _, x := range s {
			if !slices.Contains(pub, x) {
				pub = append(pub, x)
			}
		}
	}
	add("$JS.API.INFO", natsjs.ServerInfoSubject)
	for _, t := range publish {
		st := natsjs.StreamName(t)
		add(st+".>", "$JS.API.STREAM.INFO."+st)
	}
	for _, t := range subscribe {
		st := natsjs.StreamName(t)
		dl := natsjs.StreamName(consumer.DeadLetterTopic(t))
		add("$JS.API.STREAM.INFO."+st,
			"$JS.API.CONSUMER.CREATE."+st+".>",
			"$JS.API.CONSUMER.DURABLE.CREATE."+st+".*",
			"$JS.API.CONSUMER.INFO."+st+".*",
			"$JS.API.CONSUMER.MSG.NEXT."+st+".*",
			"$JS.API.CONSUMER.UNPIN."+st+".*",
			"$JS.API.CONSUMER.RESET."+st+".*",
			"$JS.API.CONSUMER.NAMES."+st,
			"$JS.API.CONSUMER.LIST."+st,
			"$JS.ACK."+st+".>",
			"$JS.FC."+st+".>",
			dl+".>", "$JS.API.STREAM.INFO."+dl)
	}
	if len(subscribe) > 0 {
		// Routers with a circuit breaker report its state.
		br := natsjs.StreamName(consumer.BreakerTopic)
		add(br+".>", "$JS.API.STREAM.INFO."+br)
		for _, b := range groupBuckets {
			st := "KV_" + b
			add("$KV."+b+".>",
				"$JS.API.STREAM.INFO."+st,
				"$JS.API.STREAM.UPDATE."+st,
				"$JS.API.DIRECT.GET."+st+".>",
				"$JS.API.STREAM.MSG.GET."+st,
				"$JS.API.CONSUMER.CREATE."+st+".>",
				"$JS.API.CONSUMER.DELETE."+st+".*",
				"$JS.FC."+st+".>")
		}
	}
	p := &jwt.Permissions{}
	p.Pub.Allow = pub
	p.Sub.Allow = []string{inbox + ".>"}
	return p
}

// InboxPrefix is the reply-subject prefix of service name.
func InboxPrefix(name string) string { return "_INBOX_" + name }
