// Package telemetry gives Herald services Prometheus metrics and
// OpenTelemetry traces.
//
// [Metrics] counts what a process publishes and consumes: it is a
// consumer.Observer (pass it to consumer.WithObserver) and a publish hook
// (put it in herald.Config.Hooks). [NewBrokerCollector] exports the
// broker-side gauges (consumer lag, DLQ depth) that only the broker knows;
// the server collects them on scrape. Every metric name starts with
// "herald_"; docs/observability.md lists them with their labels.
//
// [Tracing] makes a producer span for every published event and a consumer
// span around every handler run, carrying W3C trace context in the event's
// traceparent and tracestate attributes, so a trace follows a business
// transaction across services. Tracing is off unless a service builds a
// Tracing; [SetupOTLP] builds a tracer provider that exports over OTLP.
//
//	reg := prometheus.NewRegistry()
//	m, err := telemetry.NewMetrics(reg)
//	tp, err := telemetry.SetupOTLP(ctx, "http://127.0.0.1:4318", "billing")
//	defer tp.Shutdown(context.Background())
//	tr, err := telemetry.NewTracing(tp)
//	c, err := herald.Connect(ctx, herald.Config{URL: url, Hooks: []herald.PublishHook{m, tr.PublishHook()}})
//	r, err := c.Router("billing", []string{"orders"},
//		consumer.WithObserver(m), consumer.WithMiddleware(tr.Middleware()))
//	http.Handle("/metrics", telemetry.Handler(reg))
package telemetry
