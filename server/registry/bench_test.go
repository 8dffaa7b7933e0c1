package registry_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/server/registry"
)

// benchLookups sends GET path(i) over keep-alive connections from
// GOMAXPROCS*4 goroutines and reports lookups/s.
func benchLookups(b *testing.B, h http.Handler, path func(i int64) string) {
	srv := httptest.NewServer(h)
	defer srv.Close()
	tr := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	var n atomic.Int64
	b.SetParallelism(4)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			resp, err := hc.Get(srv.URL + path(i))
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "lookups/s")
	b.ReportMetric(float64(runtime.GOMAXPROCS(0)), "procs")
}

// BenchmarkLookupByID measures GET /schemas/ids/{id} over HTTP on 100
// registered schemas (the answer cached after the first request).
func BenchmarkLookupByID(b *testing.B) {
	reg, err := schema.New(context.Background(), schema.NewMemoryStore())
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()
	const schemas = 100
	for i := range schemas {
		s := schema.Schema{Text: fmt.Sprintf(`{"type":"record","name":"R%d","namespace":"bench","fields":[{"name":"id","type":"string"},{"name":"total","type":"long"},{"name":"note","type":["null","string"],"default":null}]}`, i)}
		if _, err := reg.Register(context.Background(), fmt.Sprintf("bench-%d", i), s, schema.RegisterOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	paths := make([]string, schemas)
	for i := range paths {
		paths[i] = fmt.Sprintf("/schemas/ids/%d", i+1)
	}
	benchLookups(b, registry.NewHandler(reg), func(i int64) string { return paths[i%schemas] })
}

// BenchmarkLookupBaseline is the ceiling: the same HTTP setup with a
// handler that writes a constant body of the same size.
func BenchmarkLookupBaseline(b *testing.B) {
	body := []byte(`{"schema":"{\"type\":\"record\",\"name\":\"R1\",\"namespace\":\"bench\",\"fields\":[{\"name\":\"id\",\"type\":\"string\"},{\"name\":\"total\",\"type\":\"long\"},{\"name\":\"note\",\"type\":[\"null\",\"string\"],\"default\":null}]}"}`)
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", registry.ContentType)
		_, _ = w.Write(body)
	})
	benchLookups(b, h, func(int64) string { return "/schemas/ids/1" })
}
