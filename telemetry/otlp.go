package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// SetupOTLP returns a tracer provider that exports spans over OTLP/HTTP
// (protobuf) to endpoint through a batch span processor, as service
// serviceName. Tracing is off unless a service calls it: pass the provider
// to NewTracing.
//
// endpoint is a URL: "http://127.0.0.1:4318" (plain HTTP) or
// "https://collector.example:4318" (TLS); without a path, spans go to the
// OTLP default /v1/traces. Every span is sampled unless its parent was not
// (parent-based, always on).
//
// The caller owns the provider: Shutdown(ctx) flushes the spans still
// buffered and stops its goroutines; call it before exiting.
func SetupOTLP(ctx context.Context, endpoint, serviceName string) (*sdktrace.TracerProvider, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP endpoint %q: want a URL like http://127.0.0.1:4318: %w", endpoint, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("telemetry: OTLP endpoint %q: want a URL like http://127.0.0.1:4318 or https://host:4318", endpoint)
	}
	if serviceName == "" {
		return nil, errors.New("telemetry: OTLP service name is empty")
	}
	if strings.Trim(u.Path, "/") == "" {
		u.Path = "/v1/traces"
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(u.String()))
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP exporter for %q: %w", endpoint, err)
	}
	res := resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName(serviceName),
		semconv.TelemetrySDKLanguageGo,
		semconv.TelemetrySDKName("opentelemetry"),
	)
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())),
	), nil
}
