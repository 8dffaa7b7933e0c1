// Package gateway lets services in any language publish and consume
// Herald events with nothing but an HTTP client.
//
// It serves three things on the admin address (see docs/http.md):
//
//	POST /v1/topics/{topic}/events     ingest: CloudEvents HTTP binding, binary or
//	                                   structured mode, or a JSON batch
//	GET  /v1/groups/{group}/events     pull: leased deliveries of a pull subscription
//	POST /v1/groups/{group}/ack        settle leases: done
//	POST /v1/groups/{group}/nack       settle leases: redeliver
//
// and push subscriptions, which deliver each event of a group to a
// webhook as a signed CloudEvents binary-mode request (Standard Webhooks
// headers), managed under /api/v1/subscriptions.
//
// Ingest answers 202 only once the broker confirmed every event of the
// request; a request with any invalid event stores none and answers 400
// with one entry per bad event. Errors are RFC 9457 problem documents
// (application/problem+json).
//
//	gw, err := gateway.New(client, gateway.WithRegistry(reg), gateway.WithTopicCheck(exists))
//	mux.Handle("/v1/", gw.Handler())
package gateway
