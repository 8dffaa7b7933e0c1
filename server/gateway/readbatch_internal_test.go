package gateway

import (
	"bytes"
	"fmt"
	"testing"
)

// BenchmarkReadBatch decodes a structured batch of 100 events, the ingest
// endpoint's own work before it publishes.
func BenchmarkReadBatch(b *testing.B) {
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i := range 100 {
		if i > 0 {
			buf.WriteByte(',')
		}
		fmt.Fprintf(&buf, `{"specversion":"1.0","id":"ev-%d","source":"bench","type":"shop.order.placed.v1","subject":"o-%d","datacontenttype":"application/json","data":{"order_id":"o-%d","total_cents":4200}}`, i, i%64, i)
	}
	buf.WriteByte(']')
	body := buf.Bytes()
	g := &Gateway{cfg: config{maxBody: DefaultMaxBody, maxBatch: DefaultMaxBatch}}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		evs, p := g.readBatch(body)
		if p != nil || len(evs) != 100 {
			b.Fatalf("decoded %d events, problem %v", len(evs), p)
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
}
