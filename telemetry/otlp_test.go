package telemetry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/telemetry"
)

// collector is an OTLP/HTTP trace receiver on loopback: it decodes every
// export request it gets.
type collector struct {
	mu       sync.Mutex
	paths    []string
	requests []*coltrace.ExportTraceServiceRequest
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req := &coltrace.ExportTraceServiceRequest{}
	if err := proto.Unmarshal(body, req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	c.paths = append(c.paths, r.URL.Path)
	c.requests = append(c.requests, req)
	c.mu.Unlock()
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// spans returns the received spans with their service names.
func (c *collector) spans() (spans []*tracepb.Span, services []string, paths []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, req := range c.requests {
		for _, rs := range req.GetResourceSpans() {
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.GetKey() == "service.name" {
					services = append(services, kv.GetValue().GetStringValue())
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				spans = append(spans, ss.GetSpans()...)
			}
		}
	}
	return spans, services, append([]string(nil), c.paths...)
}

func TestSetupOTLP(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"", "/custom/traces"} {
		t.Run("path="+path, func(t *testing.T) {
			t.Parallel()
			col := &collector{}
			srv := httptest.NewServer(col)
			defer srv.Close()
			ctx := t.Context()
			tp, err := telemetry.SetupOTLP(ctx, srv.URL+path, "billing")
			if err != nil {
				t.Fatal(err)
			}
			tr, err := telemetry.NewTracing(tp)
			if err != nil {
				t.Fatal(err)
			}
			e := event.New("shop", "order.placed", nil)
			_, done := tr.PublishHook().Before(ctx, []*event.Event{e}, []string{"orders"})
			done(nil)
			h := tr.Middleware()(func(context.Context, *consumer.Message) error { return nil })
			if err := h(ctx, &consumer.Message{Event: e, Topic: "orders", Group: "billing", Attempt: 1}); err != nil {
				t.Fatal(err)
			}
			// Shutdown flushes the batch processor's buffer.
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := tp.Shutdown(sctx); err != nil {
				t.Fatalf("shutdown: %v", err)
			}
			spans, services, paths := col.spans()
			if len(spans) != 2 {
				t.Fatalf("collector got %d spans, want 2", len(spans))
			}
			wantPath := path
			if wantPath == "" {
				wantPath = "/v1/traces"
			}
			for _, p := range paths {
				if p != wantPath {
					t.Errorf("export went to %q, want %q", p, wantPath)
				}
			}
			for _, s := range services {
				if s != "billing" {
					t.Errorf("service.name %q, want billing", s)
				}
			}
			names := map[string]*tracepb.Span{}
			for _, s := range spans {
				names[s.GetName()] = s
			}
			send, process := names["send orders"], names["process orders"]
			if send == nil || process == nil {
				t.Fatalf("spans %v, want send orders and process orders", names)
			}
			if string(process.GetParentSpanId()) != string(send.GetSpanId()) || string(process.GetTraceId()) != string(send.GetTraceId()) {
				t.Error("exported consumer span is not the producer span's child")
			}
			if send.GetKind() != tracepb.Span_SPAN_KIND_PRODUCER || process.GetKind() != tracepb.Span_SPAN_KIND_CONSUMER {
				t.Errorf("kinds %v, %v", send.GetKind(), process.GetKind())
			}
		})
	}
}

func TestSetupOTLPErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ endpoint, service, want string }{
		{"127.0.0.1:4318", "svc", "want a URL"},
		{"grpc://127.0.0.1:4317", "svc", "want a URL"},
		{"http://", "svc", "want a URL"},
		{"http://[::1", "svc", "want a URL"},
		{"http://127.0.0.1:4318", "", "service name"},
	} {
		_, err := telemetry.SetupOTLP(t.Context(), tc.endpoint, tc.service)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("SetupOTLP(%q, %q) = %v, want an error about %q", tc.endpoint, tc.service, err, tc.want)
		}
	}
}
